//! Segmentation offloads for the udp backend. With a vnet header on the TUN device the
//! kernel hands the agent TCP super-packets (up to 64 KiB); the agent cuts them into
//! MSS-sized inner packets — each still one bare IPv4 packet per datagram on the wire, as
//! flanneld expects — and sends them in one `sendmsg` with UDP GSO. On the way in, UDP GRO
//! hands over many datagrams at once and consecutive segments of one TCP flow are joined
//! back into a super-packet for a single TUN write.

use super::packet::checksum;

pub const VNET_HDR_LEN: usize = 10;
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
/// Largest IPv4 packet the coalescer builds.
const MAX_COALESCED: usize = 65_000;
/// Most segments joined into one packet (a UDP GRO batch of 64 KiB holds about 45).
const MAX_JOINED: usize = 64;
/// Most pieces of one frame a sink is handed: the headers and every joined payload.
pub const MAX_PARTS: usize = MAX_JOINED + 1;

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

/// One's-complement sum of `data` (big-endian 16-bit words) added to `acc`, folded to
/// 16 bits but not inverted. The sum is byte-order independent (RFC 1071): it is taken
/// over little-endian 64-bit loads, which the compiler vectorizes, and swapped at the end.
fn sum(data: &[u8], acc: u32) -> u32 {
    let mut wide: u64 = 0;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        wide += (v & 0xffff_ffff) + (v >> 32);
    }
    // the tail keeps its offset's parity: padded with zeros at the end
    let mut tail = [0u8; 8];
    let rest = words.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    let v = u64::from_le_bytes(tail);
    wide += (v & 0xffff_ffff) + (v >> 32);
    while wide >> 16 != 0 {
        wide = (wide & 0xffff) + (wide >> 16);
    }
    let mut total = acc as u64 + (wide as u16).swap_bytes() as u64;
    while total >> 16 != 0 {
        total = (total & 0xffff) + (total >> 16);
    }
    total as u32
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

/// How a TCP/IPv4 super-packet is cut into segments of `mss` payload bytes without copying
/// its payload: [`segment_headers_tcp4`] writes one header per segment, and segment `i` on
/// the wire is header `i` followed by `payload[i * mss..]` (at most `mss` bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// IP and TCP header length: every header in the buffer has this size.
    pub hlen: usize,
    pub mss: usize,
    pub count: usize,
}

impl Segments {
    /// Segment `i` as (header, payload) slices of the header buffer and the super-packet.
    pub fn parts<'a>(&self, i: usize, hdrs: &'a [u8], pkt: &'a [u8]) -> (&'a [u8], &'a [u8]) {
        let payload = &pkt[self.hlen..];
        let from = (i * self.mss).min(payload.len());
        (&hdrs[i * self.hlen..(i + 1) * self.hlen], &payload[from..(from + self.mss).min(payload.len())])
    }
}

/// Writes into `hdrs` the IP and TCP header of every segment a TCP/IPv4 super-packet is
/// cut into, with full IP and TCP checksums (the TCP one over the payload slice the header
/// goes with). None when the packet is not TCP/IPv4.
pub fn segment_headers_tcp4(pkt: &[u8], mss: usize, hdrs: &mut Vec<u8>) -> Option<Segments> {
    if pkt.len() < 40 || pkt[0] >> 4 != 4 || pkt[9] != 6 || mss == 0 {
        return None;
    }
    let ihl = ((pkt[0] & 0x0f) as usize) * 4;
    if ihl < 20 || pkt.len() < ihl + 20 {
        return None;
    }
    let doff = ((pkt[ihl + 12] >> 4) as usize) * 4;
    let hlen = ihl + doff;
    if doff < 20 || pkt.len() < hlen {
        return None;
    }
    let payload = &pkt[hlen..];
    let id = u16::from_be_bytes([pkt[4], pkt[5]]);
    let seq = u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]]);
    let n = payload.len().div_ceil(mss).max(1);
    hdrs.clear();
    for i in 0..n {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let at = hdrs.len();
        hdrs.extend_from_slice(&pkt[..hlen]);
        let h = &mut hdrs[at..];
        let total = (hlen + chunk.len()) as u16;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        set_ip_checksum(h);
        let tcp = &mut h[ihl..];
        tcp[4..8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
        if i + 1 != n {
            tcp[13] &= !(0x01 | 0x08); // FIN and PSH only on the last segment
        }
        if i != 0 {
            tcp[13] &= !0x80; // CWR only on the first
        }
        tcp[16] = 0;
        tcp[17] = 0;
        // the TCP header's length is a multiple of 4, so its sum and the payload's add up
        let acc = sum(chunk, sum(&h[ihl..], pseudo_header(h, 6, doff + chunk.len())));
        let c = !fold(acc);
        h[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
    }
    Some(Segments { hlen, mss, count: n })
}

/// Joins consecutive in-order segments of one TCP flow into a super-packet written with a
/// vnet header; anything else passes through alone. Payloads are not copied: the
/// coalescer keeps where they are in the receive buffer (`base`, passed to every call,
/// which must not change until [`Coalescer::flush`]) and the sink writes the pieces.
#[derive(Default)]
pub struct Coalescer {
    /// vnet header, then the first packet's IP and TCP headers (rewritten on flush).
    head: Vec<u8>,
    /// Payloads after the first packet's, as (offset, length) in `base`.
    more: Vec<(usize, usize)>,
    /// The first packet's payload in `base`.
    first: (usize, usize),
    hlen: usize,
    seg: usize,
    /// IP total length of the joined packet.
    total: usize,
    count: usize,
    next_seq: u32,
    closed: bool,
}

/// Where coalesced or single packets go (the TUN device, or a test's list): one frame,
/// the vnet header first, as a list of at most [`MAX_PARTS`] pieces written back to back.
pub trait Sink {
    fn emit(&mut self, parts: &[&[u8]]);
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

const NO_VNET: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

impl Coalescer {
    /// Offers the received inner packet `base[at..at + len]`.
    pub fn push(&mut self, base: &[u8], at: usize, len: usize, sink: &mut impl Sink) {
        let p = &base[at..at + len];
        let Some((hlen, plen)) = joinable(p) else {
            self.flush(base, sink);
            sink.emit(&[&NO_VNET, p]);
            return;
        };
        if self.count > 0 && !self.closed && self.fits(p, hlen, plen) {
            self.more.push((at + hlen, plen));
            self.total += plen;
            self.count += 1;
            self.next_seq = self.next_seq.wrapping_add(plen as u32);
            // a shorter segment or PSH ends the run
            self.closed = plen < self.seg || p[33] & 0x08 != 0;
            if self.closed {
                self.head[VNET_HDR_LEN + 33] |= p[33] & 0x08;
            }
            return;
        }
        self.flush(base, sink);
        self.head.clear();
        self.head.extend_from_slice(&NO_VNET);
        self.head.extend_from_slice(&p[..hlen]);
        self.first = (at + hlen, plen);
        self.more.clear();
        self.hlen = hlen;
        self.seg = plen;
        self.total = len;
        self.count = 1;
        self.next_seq = u32::from_be_bytes([p[24], p[25], p[26], p[27]]).wrapping_add(plen as u32);
        self.closed = p[33] & 0x08 != 0;
    }

    fn fits(&self, p: &[u8], hlen: usize, len: usize) -> bool {
        let first = &self.head[VNET_HDR_LEN..];
        hlen == self.hlen
            && self.count < MAX_JOINED
            && len <= self.seg
            && self.total + len <= MAX_COALESCED
            && p[1] == first[1] // TOS/ECN
            && p[8] == first[8] // TTL
            && p[12..24] == first[12..24] // addresses and ports
            && u32::from_be_bytes([p[24], p[25], p[26], p[27]]) == self.next_seq
            && p[28..32] == first[28..32] // ack
            && p[34..36] == first[34..36] // window
            && p[40..hlen] == first[40..hlen] // options
    }

    /// Emits whatever is pending; `base` is the buffer the pending payloads are in.
    pub fn flush(&mut self, base: &[u8], sink: &mut impl Sink) {
        if self.count == 0 {
            return;
        }
        if self.count > 1 {
            let hlen = self.hlen;
            let total = self.total;
            let ip = &mut self.head[VNET_HDR_LEN..];
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
            hdr.write(&mut self.head[..VNET_HDR_LEN]);
        }
        let mut parts: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
        parts[0] = &self.head;
        let payloads = std::iter::once(self.first).chain(self.more.iter().copied());
        for (slot, (at, len)) in parts[1..].iter_mut().zip(payloads) {
            *slot = &base[at..at + len];
        }
        sink.emit(&parts[..1 + self.count]);
        self.count = 0;
        self.closed = false;
        self.more.clear();
    }
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
        fn emit(&mut self, parts: &[&[u8]]) {
            self.0.push(parts.concat());
        }
    }

    /// The segments of a super-packet as the wire carries them, back to back.
    fn segment_tcp4(pkt: &[u8], mss: usize) -> (Segments, Vec<u8>) {
        let mut hdrs = Vec::new();
        let segs = segment_headers_tcp4(pkt, mss, &mut hdrs).unwrap();
        let mut out = Vec::new();
        for i in 0..segs.count {
            let (h, p) = segs.parts(i, &hdrs, pkt);
            out.extend_from_slice(h);
            out.extend_from_slice(p);
        }
        (segs, out)
    }

    /// Pushes every packet of `packets` (laid out back to back in one buffer, as a
    /// receive batch is) and flushes.
    fn coalesce(packets: &[&[u8]]) -> Vec<Vec<u8>> {
        let base = packets.concat();
        let mut c = Coalescer::default();
        let mut sink = Frames(Vec::new());
        let mut at = 0;
        for p in packets {
            c.push(&base, at, p.len(), &mut sink);
            at += p.len();
        }
        c.flush(&base, &mut sink);
        sink.0
    }

    /// The textbook sum: big-endian 16-bit words, end-around carry.
    fn slow_sum(data: &[u8], acc: u32) -> u16 {
        let mut s = acc as u64;
        for c in data.chunks(2) {
            s += (u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])) as u64;
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn the_fast_sum_agrees_with_the_textbook_one() {
        let data: Vec<u8> = (0..4099u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 40, 1451, 4099] {
            for acc in [0, 1, 0xffff, 0x1_2345, 0xfff0_0000] {
                assert_eq!(fold(sum(&data[..len], acc)), slow_sum(&data[..len], acc), "len {len} acc {acc:#x}");
            }
        }
        assert_eq!(fold(sum(&[0xff; 64], 0)), 0xffff, "all ones never folds to zero");
    }

    #[test]
    fn segments_carry_valid_checksums_and_consecutive_sequence_numbers() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let sup = tcp_packet(1000, &payload, 0x18);
        let (cut, out) = segment_tcp4(&sup, 1400);
        assert_eq!(cut, Segments { hlen: 52, mss: 1400, count: 3 });
        let size = cut.hlen + cut.mss;
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
        let (cut, out) = segment_tcp4(&sup, 1400);
        let frames = coalesce(&out.chunks(cut.hlen + cut.mss).collect::<Vec<_>>());
        assert_eq!(frames.len(), 1, "one TUN write for three segments");
        let f = &frames[0];
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
    fn a_joined_packet_holds_at_most_max_joined_segments() {
        let payload = vec![3u8; 70 * 100];
        let sup = tcp_packet(0, &payload, 0x10);
        let (cut, out) = segment_tcp4(&sup, 100);
        let frames = coalesce(&out.chunks(cut.hlen + cut.mss).collect::<Vec<_>>());
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].len(), VNET_HDR_LEN + 52 + MAX_JOINED * 100);
        assert_eq!(frames[1].len(), VNET_HDR_LEN + 52 + (70 - MAX_JOINED) * 100);
    }

    #[test]
    fn gaps_other_flows_and_non_tcp_are_not_joined() {
        let (a, gap) = (tcp_packet(0, &[1; 100], 0x10), tcp_packet(200, &[1; 100], 0x10));
        let mut other = tcp_packet(300, &[1; 100], 0x10);
        other[22] ^= 1; // another port
        let icmp = [0x45u8, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 244, 1, 2, 10, 244, 2, 2, 8, 0, 0, 0, 0, 1, 0, 1];
        let frames = coalesce(&[&a, &gap, &other, &icmp]);
        assert_eq!(frames.len(), 4);
        assert!(frames.iter().all(|f| VnetHdr::parse(f).gso_type == GSO_NONE));
        assert_eq!(&frames[0][VNET_HDR_LEN..], &a[..], "a packet alone passes unchanged");
        assert_eq!(&frames[3][VNET_HDR_LEN..], &icmp[..]);
    }
}
