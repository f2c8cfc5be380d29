//! The client end of SPDY/3.1 as Kubernetes' streaming protocols use it (moby/spdystream, the
//! kubelet's and the container runtime's stream servers): frames, one outgoing header block per
//! new stream, data with FIN for a half-close, PING answered, window updates sent for what
//! was read.
//!
//! Header blocks are a zlib stream that spans the connection (SPDY/3's dictionary is for
//! compressing). The blocks written here are stored (uncompressed) deflate blocks of one zlib
//! stream without a preset dictionary, which every zlib reader accepts; the header blocks of
//! the server's replies are skipped, since nothing the client needs is in them.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const WINDOW_UPDATE: u16 = 9;
pub const FLAG_FIN: u8 = 0x01;

/// A frame as the client needs to see it.
#[derive(Debug, PartialEq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    /// The stream was refused or reset.
    Reset {
        stream: u32,
        status: u32,
    },
    Ping(u32),
    GoAway,
    /// SYN_REPLY, SETTINGS, WINDOW_UPDATE, HEADERS, NOOP: nothing to act on.
    Other,
}

/// Writes the client's frames; keeps the header compression stream's state.
#[derive(Default)]
pub struct Writer {
    started: bool,
}

impl Writer {
    /// SYN_STREAM for `stream` with `headers` (names lowercase, as SPDY wants them).
    pub fn syn_stream(&mut self, stream: u32, headers: &[(&str, &str)], out: &mut BytesMut) {
        let mut block = BytesMut::new();
        block.put_u32(headers.len() as u32);
        for (name, value) in headers {
            block.put_u32(name.len() as u32);
            block.put_slice(name.as_bytes());
            block.put_u32(value.len() as u32);
            block.put_slice(value.as_bytes());
        }
        let mut payload = BytesMut::new();
        payload.put_u32(stream & 0x7fff_ffff);
        payload.put_u32(0); // associated-to stream
        payload.put_u16(0); // priority, slot
        self.stored_block(&block, &mut payload);
        control(SYN_STREAM, 0, &payload, out);
    }

    /// The header block as a stored deflate block of the connection's zlib stream.
    fn stored_block(&mut self, block: &[u8], out: &mut BytesMut) {
        if !self.started {
            // CMF 0x78 (deflate, 32 KiB window), FLG 0x01: no preset dictionary, check bits.
            out.put_slice(&[0x78, 0x01]);
            self.started = true;
        }
        for chunk in block.chunks(u16::MAX as usize) {
            stored(chunk, out);
        }
        // An empty stored block ends the header block as a zlib sync flush does: a reader
        // hands out what it has on reaching it, instead of reading on into the next frame.
        stored(&[], out);
    }
}

/// A stored, not final deflate block (its header bits padded to the byte).
fn stored(chunk: &[u8], out: &mut BytesMut) {
    let len = chunk.len() as u16;
    out.put_u8(0);
    out.put_u16_le(len);
    out.put_u16_le(!len);
    out.put_slice(chunk);
}

impl Writer {}

/// The largest data frame payload (24-bit length).
const MAX_DATA: usize = 0xff_ffff;

/// A data frame (`fin`: the client's last on `stream`; an empty one carries just the flag).
pub fn data(stream: u32, fin: bool, data: &[u8], out: &mut BytesMut) {
    let mut chunks: Vec<&[u8]> = data.chunks(MAX_DATA).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        out.put_u32(stream & 0x7fff_ffff);
        out.put_u8(if fin && i == last { FLAG_FIN } else { 0 });
        out.put_uint(chunk.len() as u64, 3);
        out.put_slice(chunk);
    }
}

pub fn ping(id: u32, out: &mut BytesMut) {
    control(PING, 0, &id.to_be_bytes(), out);
}

/// Grants the server `delta` more bytes on `stream` (0: the whole session).
pub fn window_update(stream: u32, delta: u32, out: &mut BytesMut) {
    let mut payload = [0u8; 8];
    payload[..4].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    payload[4..].copy_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
    control(WINDOW_UPDATE, 0, &payload, out);
}

fn control(kind: u16, flags: u8, payload: &[u8], out: &mut BytesMut) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u8(flags);
    out.put_uint(payload.len() as u64, 3);
    out.put_slice(payload);
}

/// Takes one whole frame off the front of `buffer`, if one is there.
pub fn parse(buffer: &mut BytesMut) -> Option<Frame> {
    if buffer.len() < 8 {
        return None;
    }
    let length = u32::from_be_bytes([0, buffer[5], buffer[6], buffer[7]]) as usize;
    if buffer.len() < 8 + length {
        return None;
    }
    let mut frame = buffer.split_to(8 + length).freeze();
    let first = frame.get_u32();
    let flags = frame.get_u8();
    frame.advance(3);
    if first & 0x8000_0000 == 0 {
        return Some(Frame::Data {
            stream: first & 0x7fff_ffff,
            fin: flags & FLAG_FIN != 0,
            data: frame,
        });
    }
    let kind = (first & 0xffff) as u16;
    Some(match kind {
        RST_STREAM if frame.len() >= 8 => Frame::Reset {
            stream: frame.get_u32() & 0x7fff_ffff,
            status: frame.get_u32(),
        },
        PING if frame.len() >= 4 => Frame::Ping(frame.get_u32()),
        GOAWAY => Frame::GoAway,
        SYN_REPLY | SYN_STREAM => Frame::Other,
        _ => Frame::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_frames_round_trip_with_their_fin() {
        let mut out = BytesMut::new();
        data(3, false, b"hello", &mut out);
        data(3, true, b"", &mut out);
        assert_eq!(
            parse(&mut out),
            Some(Frame::Data {
                stream: 3,
                fin: false,
                data: Bytes::from_static(b"hello")
            })
        );
        assert_eq!(
            parse(&mut out),
            Some(Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::new()
            })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn partial_frames_wait_for_the_rest() {
        let mut out = BytesMut::new();
        ping(7, &mut out);
        let mut partial = out.split_to(5);
        assert_eq!(parse(&mut partial), None);
        partial.unsplit(out);
        assert_eq!(parse(&mut partial), Some(Frame::Ping(7)));
    }

    #[test]
    fn header_blocks_are_one_zlib_stream_of_stored_blocks() {
        use std::io::Read;
        let mut writer = Writer::default();
        let mut out = BytesMut::new();
        writer.syn_stream(1, &[("streamtype", "error")], &mut out);
        writer.syn_stream(3, &[("streamtype", "stdout")], &mut out);
        // The two header blocks, as a reader would feed them to one zlib stream.
        let mut compressed = Vec::new();
        while out.len() >= 8 {
            let length = u32::from_be_bytes([0, out[5], out[6], out[7]]) as usize;
            let frame = out.split_to(8 + length);
            compressed.extend_from_slice(&frame[18..]);
        }
        let mut inflated = Vec::new();
        let _ = flate2::read::ZlibDecoder::new(&compressed[..]).read_to_end(&mut inflated);
        let mut expected = Vec::new();
        for value in ["error", "stdout"] {
            expected.extend_from_slice(&1u32.to_be_bytes());
            expected.extend_from_slice(&10u32.to_be_bytes());
            expected.extend_from_slice(b"streamtype");
            expected.extend_from_slice(&(value.len() as u32).to_be_bytes());
            expected.extend_from_slice(value.as_bytes());
        }
        assert_eq!(inflated, expected);
    }
}
