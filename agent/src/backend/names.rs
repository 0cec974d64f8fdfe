//! Each backend's names and ports as flanneld uses them: a leaf, so the net-conf's
//! parser (config) and the backends share them without importing each other.

/// vxlan: devices `flannel.<VNI>` and `flannel-v6.<VNI>`, the kernel's default port.
pub mod vxlan {
    /// The kernel's default VXLAN port, which flanneld keeps.
    pub const DEFAULT_PORT: u16 = 8472;
    /// Every IPv4 vxlan device of flannel is named `flannel.<VNI>`.
    pub const DEVICE_PREFIX: &str = "flannel.";
    /// Every IPv6 vxlan device of flannel is named `flannel-v6.<VNI>`.
    pub const DEVICE_PREFIX_V6: &str = "flannel-v6.";

    /// flanneld's name for the device of `vni`.
    pub fn device_name(vni: u32) -> String {
        format!("{DEVICE_PREFIX}{vni}")
    }

    /// flanneld's name for the IPv6 device of `vni`.
    pub fn device_name_v6(vni: u32) -> String {
        format!("{DEVICE_PREFIX_V6}{vni}")
    }
}

/// udp: TUN `flannel0`, port 8285.
pub mod udp {
    pub const DEFAULT_PORT: u16 = 8285;
    /// flanneld's name for the udp backend's TUN device.
    pub const DEVICE: &str = "flannel0";
}
