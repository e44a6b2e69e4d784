//! Decoders for one pcluster: LZ4 (block format), MicroLZMA, raw DEFLATE and Zstandard.
//!
//! Each decoder is told the exact decoded length before it starts and never writes past
//! it, so a corrupt stream cannot make the reader allocate more than the extent's length.
//! In *full* mode the stream must produce exactly that length (and, for LZ4, consume exactly
//! its input), as Linux does for a whole extent; in *partial* mode (dedupe's `PARTIAL_REF`,
//! LZ4 without 0padding) decoding stops once the output is full.

use std::io::Read;

use erofs_format::compress::{Algorithm, MAX_EXTENT_DECODED};

/// Why a pcluster did not decode.
pub type DecodeError = String;

/// Linux scans at most one page for the first non-zero byte of a 0padded stream.
const PAGE_SIZE: u64 = 4096;

/// What to decode and how.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    pub algorithm: Algorithm,
    /// The decoded length of the extent (or the prefix wanted, with `partial`).
    pub out_len: usize,
    /// Stop when the output is full instead of requiring the stream to end there.
    pub partial: bool,
    /// The stream sits at the end of the pcluster, after zero bytes.
    pub zero_padding: bool,
    /// Image offset of the pcluster, for the page-bounded zero scan.
    pub physical: u64,
    /// MicroLZMA dictionary size from the configuration record.
    pub lzma_dict_size: u32,
}

/// Decodes `input` (the whole pcluster) as `req` says.
pub(crate) fn decode(req: &Request, input: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if req.out_len as u64 > MAX_EXTENT_DECODED {
        return Err(format!(
            "decoded extent of {} bytes exceeds {MAX_EXTENT_DECODED}",
            req.out_len
        ));
    }
    let input = if req.zero_padding {
        let scan = (input.len() as u64).min(PAGE_SIZE - req.physical % PAGE_SIZE) as usize;
        match input[..scan].iter().position(|&b| b != 0) {
            Some(start) => &input[start..],
            None => return Err("compressed data start not found (pcluster is zero)".into()),
        }
    } else {
        input
    };
    let out = match req.algorithm {
        Algorithm::Lz4 => lz4(input, req.out_len, req.partial || !req.zero_padding)?,
        Algorithm::Lzma => microlzma(input, req.out_len, req.lzma_dict_size)?,
        Algorithm::Deflate => deflate(input, req.out_len, req.partial)?,
        Algorithm::Zstd => zstd(input, req.out_len, req.partial)?,
    };
    if out.len() != req.out_len {
        return Err(format!(
            "decoded {} bytes, the extent holds {}",
            out.len(),
            req.out_len
        ));
    }
    Ok(out)
}

/// The LZ4 block format. In full mode the input must end exactly after the last literals.
pub(crate) fn lz4(input: &[u8], out_len: usize, partial: bool) -> Result<Vec<u8>, DecodeError> {
    let mut out: Vec<u8> = Vec::with_capacity(out_len);
    let mut i = 0usize;
    let byte = |i: usize| -> Result<u8, DecodeError> {
        input
            .get(i)
            .copied()
            .ok_or_else(|| format!("lz4 stream truncated at input byte {i}"))
    };
    let length = |i: &mut usize, mut n: usize| -> Result<usize, DecodeError> {
        if n == 15 {
            loop {
                let b = byte(*i)?;
                *i += 1;
                n = n.saturating_add(usize::from(b));
                if b != 255 {
                    break;
                }
            }
        }
        Ok(n)
    };
    loop {
        let token = byte(i)?;
        i += 1;
        let lit = length(&mut i, usize::from(token >> 4))?;
        let lit_end = i
            .checked_add(lit)
            .filter(|&e| e <= input.len())
            .ok_or_else(|| format!("lz4 literals past the end of the input at byte {i}"))?;
        let room = out_len - out.len();
        if lit > room {
            if partial {
                out.extend_from_slice(&input[i..i + room]);
                return Ok(out);
            }
            return Err(format!("lz4 output exceeds {out_len} bytes"));
        }
        out.extend_from_slice(&input[i..lit_end]);
        i = lit_end;
        if partial && out.len() == out_len {
            return Ok(out);
        }
        if i == input.len() {
            break;
        }
        let offset = usize::from(u16::from_le_bytes([byte(i)?, byte(i + 1)?]));
        i += 2;
        if offset == 0 || offset > out.len() {
            return Err(format!(
                "lz4 match offset {offset} at output byte {} is invalid",
                out.len()
            ));
        }
        let mlen = length(&mut i, usize::from(token & 15))?.saturating_add(4);
        let room = out_len - out.len();
        let take = if mlen > room {
            if !partial {
                return Err(format!("lz4 output exceeds {out_len} bytes"));
            }
            room
        } else {
            mlen
        };
        // An overlapping match repeats the last `offset` bytes. Copying from the match start
        // whatever is already written keeps that period (each piece is a whole number of
        // periods), and the pieces double in size.
        let start = out.len() - offset;
        let mut left = take;
        while left > 0 {
            let n = left.min(out.len() - start);
            out.extend_from_within(start..start + n);
            left -= n;
        }
        if partial && out.len() == out_len {
            return Ok(out);
        }
    }
    Ok(out)
}

/// MicroLZMA: a raw LZMA1 stream whose first byte (always 0 in LZMA1) is replaced by the
/// complement of the properties byte; the dictionary size comes from the superblock.
fn microlzma(input: &[u8], out_len: usize, dict_size: u32) -> Result<Vec<u8>, DecodeError> {
    use lzma_rs::decompress::raw::{LzmaDecoder, LzmaParams, LzmaProperties};
    let first = *input.first().ok_or("empty MicroLZMA stream")?;
    let props = u32::from(!first);
    if props >= 9 * 5 * 5 {
        return Err(format!("MicroLZMA properties byte {props:#x} is invalid"));
    }
    let (lc, lp, pb) = (props % 9, props / 9 % 5, props / 45);
    if lc + lp > 4 {
        return Err(format!("MicroLZMA lc {lc} + lp {lp} exceeds 4"));
    }
    let params = LzmaParams::new(
        LzmaProperties { lc, lp, pb },
        dict_size.max(4096),
        Some(out_len as u64),
    );
    let mut decoder = LzmaDecoder::new(params, Some(dict_size as usize))
        .map_err(|e| format!("MicroLZMA: {e}"))?;
    let mut out = Vec::with_capacity(out_len);
    decoder
        .decompress(&mut &input[..], &mut out)
        .map_err(|e| format!("MicroLZMA: {e}"))?;
    Ok(out)
}

/// Raw DEFLATE (RFC 1951, no zlib or gzip wrapper).
fn deflate(input: &[u8], out_len: usize, partial: bool) -> Result<Vec<u8>, DecodeError> {
    use miniz_oxide::inflate::TINFLStatus;
    use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
    let mut state = Box::<DecompressorOxide>::default();
    let mut out = vec![0u8; out_len];
    let (status, _, written) = decompress(
        &mut state,
        input,
        &mut out,
        0,
        inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    match status {
        TINFLStatus::Done => {}
        TINFLStatus::HasMoreOutput if partial => {}
        TINFLStatus::HasMoreOutput => {
            return Err(format!("deflate output exceeds {out_len} bytes"));
        }
        other => return Err(format!("deflate: {other:?} after {written} bytes")),
    }
    out.truncate(written);
    Ok(out)
}

/// Largest zstd window accepted (the kernel allows 1 MiB; a single-segment frame's window
/// is its content size, which an extent bounds).
const ZSTD_MAX_WINDOW: u64 = MAX_EXTENT_DECODED;

/// The window size a zstd frame header asks for, checked before the decoder allocates it.
fn zstd_window(input: &[u8]) -> Result<u64, DecodeError> {
    if input.len() < 6 || input[..4] != [0x28, 0xb5, 0x2f, 0xfd] {
        return Err("not a zstd frame (bad magic)".into());
    }
    let fhd = input[4];
    let single_segment = fhd & 0x20 != 0;
    if !single_segment {
        let wd = input[5];
        let log = 10 + u64::from(wd >> 3);
        if log > 40 {
            return Err(format!("zstd window log {log} too large"));
        }
        let base = 1u64 << log;
        return Ok(base + base / 8 * u64::from(wd & 7));
    }
    let did = match fhd & 3 {
        0 => 0,
        1 => 1,
        2 => 2,
        _ => 4,
    };
    let fcs_at = 5 + did;
    let fcs_len = match fhd >> 6 {
        0 => 1,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let b = input
        .get(fcs_at..fcs_at + fcs_len)
        .ok_or("zstd frame header truncated")?;
    let mut raw = [0u8; 8];
    raw[..fcs_len].copy_from_slice(b);
    let v = u64::from_le_bytes(raw);
    Ok(if fcs_len == 2 { v + 256 } else { v })
}

/// One Zstandard frame.
fn zstd(input: &[u8], out_len: usize, partial: bool) -> Result<Vec<u8>, DecodeError> {
    let window = zstd_window(input)?;
    if window > ZSTD_MAX_WINDOW {
        return Err(format!("zstd window of {window} bytes is too large"));
    }
    let mut dec =
        ruzstd::decoding::StreamingDecoder::new(input).map_err(|e| format!("zstd: {e}"))?;
    let mut out = vec![0u8; out_len];
    let mut done = 0;
    while done < out_len {
        match dec.read(&mut out[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) => return Err(format!("zstd: {e}")),
        }
    }
    if done < out_len {
        return Err(format!("zstd frame ended after {done} of {out_len} bytes"));
    }
    if !partial {
        let mut extra = [0u8; 1];
        match dec.read(&mut extra) {
            Ok(0) => {}
            Ok(_) => return Err(format!("zstd frame decodes to more than {out_len} bytes")),
            Err(e) => return Err(format!("zstd: {e}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_literals_and_overlapping_matches() {
        // "abc" then a match of offset 3, length 9 (token match nibble 5), then literals "xy".
        let stream = [0x35, b'a', b'b', b'c', 3, 0, 0x20, b'x', b'y'];
        let out = lz4(&stream, 14, false).unwrap();
        assert_eq!(out, b"abcabcabcabcxy");
        // Offset 1, length 19 (match nibble 15, extension 0): a run of one byte.
        let run = [0x1f, b'z', 1, 0, 0, 0x10, b'!'];
        assert_eq!(
            lz4(&run, 21, false).unwrap(),
            [&[b'z'; 20][..], b"!"].concat()
        );
        assert_eq!(lz4(&stream, 10, true).unwrap(), b"abcabcabca");
        assert!(lz4(&stream, 13, false).is_err(), "output bound enforced");
        assert!(lz4(&stream[..7], 14, false).is_err(), "truncated stream");
        assert!(
            lz4(&[0x10, b'a', 9, 0, 0x00], 10, false).is_err(),
            "offset past start"
        );
    }

    #[test]
    fn zero_padding_finds_the_stream_and_rejects_an_empty_pcluster() {
        let req = Request {
            algorithm: Algorithm::Lz4,
            out_len: 3,
            partial: false,
            zero_padding: true,
            physical: 8192,
            lzma_dict_size: 0,
        };
        let mut pcl = vec![0u8; 60];
        pcl.extend_from_slice(&[0x30, b'a', b'b', b'c']);
        assert_eq!(decode(&req, &pcl).unwrap(), b"abc");
        assert!(decode(&req, &[0u8; 64]).is_err());
    }

    #[test]
    fn zstd_window_from_header() {
        // Single segment, 1-byte content size 200.
        assert_eq!(
            zstd_window(&[0x28, 0xb5, 0x2f, 0xfd, 0x20, 200]).unwrap(),
            200
        );
        // Window descriptor: exponent 5 (32 KiB), mantissa 0.
        assert_eq!(
            zstd_window(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, 5 << 3]).unwrap(),
            32768
        );
        assert!(zstd_window(&[0, 0, 0, 0, 0, 0]).is_err());
    }
}
