//! Segmentation offloads for the udp backend. With a vnet header on the TUN device the
//! kernel hands the agent TCP super-packets (up to 64 KiB); the agent cuts them into
//! MSS-sized inner packets — each still one bare IPv4 packet per datagram on the wire, as
//! flanneld expects — and sends them in one `sendmsg` with UDP GSO. On the way in, UDP GRO
//! hands over many datagrams at once and consecutive segments of one TCP flow are joined
//! back into a super-packet for a single TUN write.

use super::udp::checksum;

pub const VNET_HDR_LEN: usize = 10;
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
/// Largest IPv4 packet the coalescer builds.
const MAX_COALESCED: usize = 65_000;

/// `struct virtio_net_hdr` (little-endian, as TUN uses on this architecture).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> VnetHdr {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr { flags: b[0], gso_type: b[1], hdr_len: u(2), gso_size: u(4), csum_start: u(6), csum_offset: u(8) }
    }

    pub fn write(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }
}

/// One's-complement sum of `data`, not folded or inverted.
fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [b] = chunks.remainder() {
        acc += (*b as u32) << 8;
    }
    acc
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Completes a checksum the kernel left partial (`NEEDS_CSUM`): the field already holds
/// the pseudo-header sum.
pub fn finish_checksum(pkt: &mut [u8], start: usize, offset: usize) {
    if start + offset + 2 > pkt.len() {
        return;
    }
    let c = !fold(sum(&pkt[start..], 0));
    pkt[start + offset..start + offset + 2].copy_from_slice(&c.to_be_bytes());
}

fn pseudo_header(ip: &[u8], proto: u8, len: usize) -> u32 {
    let mut acc = sum(&ip[12..20], 0);
    acc += proto as u32;
    acc += len as u32;
    acc
}

fn set_ip_checksum(ip: &mut [u8]) {
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    ip[10] = 0;
    ip[11] = 0;
    let c = checksum(&ip[..ihl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Cuts a TCP/IPv4 super-packet into segments of `mss` payload bytes, appended to `out`
/// back to back with full IP and TCP checksums. Returns the size of every segment but the
/// last (which may be shorter), or None when the packet is not TCP/IPv4.
pub fn segment_tcp4(pkt: &[u8], mss: usize, out: &mut Vec<u8>) -> Option<usize> {
    if pkt.len() < 40 || pkt[0] >> 4 != 4 || pkt[9] != 6 || mss == 0 {
        return None;
    }
    let ihl = ((pkt[0] & 0x0f) as usize) * 4;
    let doff = ((pkt[ihl + 12] >> 4) as usize) * 4;
    let hlen = ihl + doff;
    if pkt.len() < hlen {
        return None;
    }
    let payload = &pkt[hlen..];
    let id = u16::from_be_bytes([pkt[4], pkt[5]]);
    let seq = u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]]);
    let n = payload.len().div_ceil(mss).max(1);
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let at = out.len();
        out.extend_from_slice(&pkt[..hlen]);
        out.extend_from_slice(chunk);
        let seg = &mut out[at..];
        let total = (hlen + chunk.len()) as u16;
        seg[2..4].copy_from_slice(&total.to_be_bytes());
        seg[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        set_ip_checksum(seg);
        let tcp = &mut seg[ihl..];
        tcp[4..8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
        if i + 1 != n {
            tcp[13] &= !(0x01 | 0x08); // FIN and PSH only on the last segment
        }
        if i != 0 {
            tcp[13] &= !0x80; // CWR only on the first
        }
        tcp[16] = 0;
        tcp[17] = 0;
        let tcp_len = doff + chunk.len();
        let c = !fold(sum(&seg[ihl..], pseudo_header(seg, 6, tcp_len)));
        seg[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
    }
    Some(hlen + mss)
}

/// Joins consecutive in-order segments of one TCP flow into a super-packet written with a
/// vnet header; anything else passes through alone.
pub struct Coalescer {
    /// vnet header space, then the first packet's headers, then every payload.
    buf: Vec<u8>,
    hlen: usize,
    seg: usize,
    count: usize,
    next_seq: u32,
    closed: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer { buf: Vec::with_capacity(VNET_HDR_LEN + MAX_COALESCED), hlen: 0, seg: 0, count: 0, next_seq: 0, closed: false }
    }
}

/// Where coalesced or single packets go (the TUN device, or a test's list).
pub trait Sink {
    fn emit(&mut self, frame: &[u8]);
}

/// A plain TCP segment that may be joined: IPv4 without options or fragmentation, flags
/// ACK or ACK|PSH, with payload.
fn joinable(p: &[u8]) -> Option<(usize, usize)> {
    if p.len() < 40 || p[0] != 0x45 || p[9] != 6 || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
        return None;
    }
    let doff = ((p[32] >> 4) as usize) * 4;
    let hlen = 20 + doff;
    let total = u16::from_be_bytes([p[2], p[3]]) as usize;
    if doff < 20 || total != p.len() || p.len() <= hlen || (p[33] != 0x10 && p[33] != 0x18) {
        return None;
    }
    Some((hlen, p.len() - hlen))
}

impl Coalescer {
    /// Offers one received inner packet.
    pub fn push(&mut self, p: &[u8], sink: &mut impl Sink) {
        let Some((hlen, len)) = joinable(p) else {
            self.flush(sink);
            emit_single(p, sink, &mut self.buf);
            return;
        };
        if self.count > 0 && !self.closed && self.fits(p, hlen, len) {
            self.buf.extend_from_slice(&p[hlen..]);
            self.count += 1;
            self.next_seq = self.next_seq.wrapping_add(len as u32);
            // a shorter segment or PSH ends the run
            self.closed = len < self.seg || p[33] & 0x08 != 0;
            if self.closed {
                self.buf[VNET_HDR_LEN + 33] |= p[33] & 0x08;
            }
            return;
        }
        self.flush(sink);
        self.buf.clear();
        self.buf.resize(VNET_HDR_LEN, 0);
        self.buf.extend_from_slice(p);
        self.hlen = hlen;
        self.seg = len;
        self.count = 1;
        self.next_seq = u32::from_be_bytes([p[24], p[25], p[26], p[27]]).wrapping_add(len as u32);
        self.closed = p[33] & 0x08 != 0;
    }

    fn fits(&self, p: &[u8], hlen: usize, len: usize) -> bool {
        let first = &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + self.hlen];
        hlen == self.hlen
            && len <= self.seg
            && self.buf.len() - VNET_HDR_LEN + len <= MAX_COALESCED
            && p[1] == first[1] // TOS/ECN
            && p[8] == first[8] // TTL
            && p[12..24] == first[12..24] // addresses and ports
            && u32::from_be_bytes([p[24], p[25], p[26], p[27]]) == self.next_seq
            && p[28..32] == first[28..32] // ack
            && p[34..36] == first[34..36] // window
            && p[40..hlen] == first[40..hlen] // options
    }

    /// Emits whatever is pending.
    pub fn flush(&mut self, sink: &mut impl Sink) {
        match self.count {
            0 => {}
            1 => {
                VnetHdr::default().write(&mut self.buf[..VNET_HDR_LEN]);
                sink.emit(&self.buf);
            }
            _ => {
                let hlen = self.hlen;
                let ip = &mut self.buf[VNET_HDR_LEN..];
                let total = ip.len();
                ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                set_ip_checksum(ip);
                // NEEDS_CSUM: the field holds the pseudo-header sum, the kernel does the rest
                let partial = fold(pseudo_header(ip, 6, total - 20));
                ip[36..38].copy_from_slice(&partial.to_be_bytes());
                let hdr = VnetHdr {
                    flags: F_NEEDS_CSUM,
                    gso_type: GSO_TCPV4,
                    hdr_len: hlen as u16,
                    gso_size: self.seg as u16,
                    csum_start: 20,
                    csum_offset: 16,
                };
                hdr.write(&mut self.buf[..VNET_HDR_LEN]);
                sink.emit(&self.buf);
            }
        }
        self.count = 0;
        self.closed = false;
    }
}

fn emit_single(p: &[u8], sink: &mut impl Sink, scratch: &mut Vec<u8>) {
    scratch.clear();
    scratch.resize(VNET_HDR_LEN, 0);
    scratch.extend_from_slice(p);
    sink.emit(scratch);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 packet with timestamps (doff 8) and `payload` bytes.
    fn tcp_packet(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 52];
        p[0] = 0x45;
        p[4..6].copy_from_slice(&7u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 63;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 244, 1, 2]);
        p[16..20].copy_from_slice(&[10, 244, 2, 2]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&5201u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&99u32.to_be_bytes());
        p[32] = 8 << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&512u16.to_be_bytes());
        p[40..52].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        p.extend_from_slice(payload);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        set_ip_checksum(&mut p);
        let c = !fold(sum(&p[20..], pseudo_header(&p, 6, p.len() - 20)));
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn tcp_valid(p: &[u8]) -> bool {
        checksum(&p[..20]) == 0 && fold(sum(&p[20..], pseudo_header(p, 6, p.len() - 20))) == 0xffff
    }

    struct Frames(Vec<Vec<u8>>);
    impl Sink for Frames {
        fn emit(&mut self, f: &[u8]) {
            self.0.push(f.to_vec());
        }
    }

    #[test]
    fn segments_carry_valid_checksums_and_consecutive_sequence_numbers() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let sup = tcp_packet(1000, &payload, 0x18);
        let mut out = Vec::new();
        let size = segment_tcp4(&sup, 1400, &mut out).unwrap();
        assert_eq!(size, 52 + 1400);
        let segs: Vec<&[u8]> = out.chunks(size).collect();
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[2].len(), 52 + 200);
        for (i, s) in segs.iter().enumerate() {
            assert!(tcp_valid(s), "segment {i} checksums");
            assert_eq!(u32::from_be_bytes([s[24], s[25], s[26], s[27]]), 1000 + 1400 * i as u32);
            assert_eq!(s[33] & 0x08 != 0, i == 2, "PSH only on the last");
            assert_eq!(&s[52..], &payload[i * 1400..(i * 1400 + 1400).min(3000)]);
        }
    }

    #[test]
    fn coalescing_rebuilds_the_super_packet() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let sup = tcp_packet(5, &payload, 0x18);
        let mut out = Vec::new();
        let size = segment_tcp4(&sup, 1400, &mut out).unwrap();
        let mut c = Coalescer::default();
        let mut sink = Frames(Vec::new());
        for s in out.chunks(size) {
            c.push(s, &mut sink);
        }
        c.flush(&mut sink);
        assert_eq!(sink.0.len(), 1, "one TUN write for three segments");
        let f = &sink.0[0];
        let hdr = VnetHdr::parse(f);
        assert_eq!((hdr.flags, hdr.gso_type, hdr.hdr_len, hdr.gso_size, hdr.csum_start, hdr.csum_offset), (1, GSO_TCPV4, 52, 1400, 20, 16));
        let ip = &f[VNET_HDR_LEN..];
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, ip.len());
        assert_eq!(checksum(&ip[..20]), 0);
        assert_eq!(&ip[52..], &payload[..]);
        assert_eq!(ip[33], 0x18, "PSH of the last segment kept");
        // finishing the partial checksum yields a valid TCP checksum over the whole
        let mut whole = ip.to_vec();
        finish_checksum(&mut whole, 20, 16);
        assert!(tcp_valid(&whole));
    }

    #[test]
    fn gaps_other_flows_and_non_tcp_are_not_joined() {
        let mut c = Coalescer::default();
        let mut sink = Frames(Vec::new());
        c.push(&tcp_packet(0, &[1; 100], 0x10), &mut sink);
        c.push(&tcp_packet(200, &[1; 100], 0x10), &mut sink); // gap
        let mut other = tcp_packet(300, &[1; 100], 0x10);
        other[22] ^= 1; // another port
        c.push(&other, &mut sink);
        let icmp = [0x45u8, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 244, 1, 2, 10, 244, 2, 2, 8, 0, 0, 0, 0, 1, 0, 1];
        c.push(&icmp, &mut sink);
        c.flush(&mut sink);
        assert_eq!(sink.0.len(), 4);
        assert!(sink.0.iter().all(|f| VnetHdr::parse(f).gso_type == GSO_NONE));
    }
}
