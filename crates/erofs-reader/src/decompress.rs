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

/// Decodes `input` (the whole pcluster) as `req` says into a new buffer.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn decode(req: &Request, input: &[u8]) -> Result<Vec<u8>, DecodeError> {
    check_len(req)?;
    let mut out = vec![0u8; req.out_len];
    decode_into(req, input, &mut out)?;
    Ok(out)
}

fn check_len(req: &Request) -> Result<(), DecodeError> {
    if req.out_len as u64 > MAX_EXTENT_DECODED {
        return Err(format!(
            "decoded extent of {} bytes exceeds {MAX_EXTENT_DECODED}",
            req.out_len
        ));
    }
    Ok(())
}

/// Decodes `input` (the whole pcluster) as `req` says into `out`, which must be exactly
/// `req.out_len` bytes long: the caller owns (and may reuse) the buffer, so decoding into a
/// file's read buffer costs no allocation and no copy.
pub(crate) fn decode_into(req: &Request, input: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    check_len(req)?;
    if out.len() != req.out_len {
        return Err(format!(
            "output buffer of {} bytes for an extent of {}",
            out.len(),
            req.out_len
        ));
    }
    let input = if req.zero_padding {
        let scan = (input.len() as u64).min(PAGE_SIZE - req.physical % PAGE_SIZE) as usize;
        match first_nonzero(&input[..scan]) {
            Some(start) => &input[start..],
            None => return Err("compressed data start not found (pcluster is zero)".into()),
        }
    } else {
        input
    };
    let written = match req.algorithm {
        Algorithm::Lz4 => lz4(input, out, req.partial || !req.zero_padding)?,
        Algorithm::Lzma => microlzma(input, out, req.lzma_dict_size)?,
        Algorithm::Deflate => deflate(input, out, req.partial)?,
        Algorithm::Zstd => zstd(input, out, req.partial)?,
    };
    if written != req.out_len {
        return Err(format!(
            "decoded {written} bytes, the extent holds {}",
            req.out_len
        ));
    }
    Ok(())
}

/// The index of the first byte that is not zero. Compressed data sits at the end of a
/// 0padded pcluster, so an lz4hc pcluster often opens with kilobytes of zeros: whole words
/// are compared first (a byte loop was 7% of `fsck --extract`).
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    let mut skipped = 0;
    for w in bytes.chunks_exact(16) {
        if u128::from_ne_bytes(w.try_into().expect("16-byte chunk")) != 0 {
            break;
        }
        skipped += 16;
    }
    bytes[skipped..]
        .iter()
        .position(|&b| b != 0)
        .map(|i| skipped + i)
}

/// The LZ4 block format, by liblz4 (the decoder Linux and erofs-utils use), into `out`;
/// returns the bytes written. In full mode the stream must end exactly at the end of the
/// input (liblz4's safe decoder requires the last sequence to end there) and fit `out`;
/// in partial mode decoding stops once `out` is full, whatever follows in the input.
pub(crate) fn lz4(input: &[u8], out: &mut [u8], partial: bool) -> Result<usize, DecodeError> {
    // liblz4 takes C int sizes; pclusters (1 MiB) and extents (MAX_EXTENT_DECODED) are far
    // below, but a caller's slice is not checked by the type.
    if i32::try_from(input.len()).is_err() || i32::try_from(out.len()).is_err() {
        return Err("lz4 buffer larger than 2 GiB".into());
    }
    let r = if partial {
        lzzzz::lz4::decompress_partial(input, out, out.len())
    } else {
        lzzzz::lz4::decompress(input, out)
    };
    r.map_err(|_| {
        if partial {
            "lz4 stream is corrupt".to_string()
        } else {
            format!(
                "lz4 stream is corrupt: it does not end with its {} input bytes, or its output exceeds {} bytes",
                input.len(),
                out.len()
            )
        }
    })
}

/// MicroLZMA: a raw LZMA1 stream whose first byte (always 0 in LZMA1) is replaced by the
/// complement of the properties byte; the dictionary size comes from the superblock.
fn microlzma(input: &[u8], out: &mut [u8], dict_size: u32) -> Result<usize, DecodeError> {
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
        Some(out.len() as u64),
    );
    let mut decoder = LzmaDecoder::new(params, Some(dict_size as usize))
        .map_err(|e| format!("MicroLZMA: {e}"))?;
    let len = out.len();
    // Writing into the slice fails rather than grow past it.
    let mut w: &mut [u8] = out;
    decoder
        .decompress(&mut &input[..], &mut w)
        .map_err(|e| format!("MicroLZMA: {e}"))?;
    Ok(len - w.len())
}

/// Raw DEFLATE (RFC 1951, no zlib or gzip wrapper).
fn deflate(input: &[u8], out: &mut [u8], partial: bool) -> Result<usize, DecodeError> {
    use miniz_oxide::inflate::TINFLStatus;
    use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
    let mut state = Box::<DecompressorOxide>::default();
    let out_len = out.len();
    let (status, _, written) = decompress(
        &mut state,
        input,
        out,
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
    Ok(written)
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
fn zstd(input: &[u8], out: &mut [u8], partial: bool) -> Result<usize, DecodeError> {
    let window = zstd_window(input)?;
    if window > ZSTD_MAX_WINDOW {
        return Err(format!("zstd window of {window} bytes is too large"));
    }
    let mut dec =
        ruzstd::decoding::StreamingDecoder::new(input).map_err(|e| format!("zstd: {e}"))?;
    let out_len = out.len();
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
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An LZ4 block of `data` as mkfs writes one (liblz4's compressor).
    fn lz4_block(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzzzz::lz4::compress_to_vec(data, &mut out, lzzzz::lz4::ACC_LEVEL_DEFAULT).unwrap();
        out
    }

    #[test]
    fn lz4_full_mode_wants_the_exact_length_and_the_whole_input() {
        let data: Vec<u8> = b"abcabcabcabcabcabc, then something else entirely, "
            .iter()
            .copied()
            .cycle()
            .take(3000)
            .collect();
        let block = lz4_block(&data);
        assert!(block.len() < data.len(), "the data compresses");
        let mut out = vec![0u8; data.len()];
        assert_eq!(lz4(&block, &mut out, false).unwrap(), data.len());
        assert_eq!(out, data);
        // One byte short of room: the stream does not fit.
        assert!(lz4(&block, &mut out[..data.len() - 1], false).is_err());
        // A truncated stream, and trailing bytes after the stream, are both refused.
        assert!(lz4(&block[..block.len() - 1], &mut out, false).is_err());
        let mut padded = block.clone();
        padded.extend_from_slice(&[0; 16]);
        assert!(lz4(&padded, &mut out, false).is_err());
        // Room for more than the stream holds decodes short: `decode` rejects the length.
        let mut big = vec![0u8; data.len() + 1];
        assert_eq!(lz4(&block, &mut big, false).unwrap(), data.len());
    }

    #[test]
    fn lz4_partial_mode_stops_when_the_output_is_full() {
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i % 251) as u8 ^ (i / 700) as u8)
            .collect();
        let mut padded = lz4_block(&data);
        // Without 0padding the stream starts the pcluster and zeroes follow it.
        padded.extend_from_slice(&[0; 100]);
        let mut prefix = vec![0u8; 1234];
        assert_eq!(lz4(&padded, &mut prefix, true).unwrap(), 1234);
        assert_eq!(prefix, data[..1234]);
        let mut whole = vec![0u8; data.len()];
        assert_eq!(lz4(&padded, &mut whole, true).unwrap(), data.len());
        assert_eq!(whole, data);
        // A stream whose match points before the output's start is corrupt.
        assert!(lz4(&[0x10, b'a', 9, 0, 0x00], &mut [0u8; 10], true).is_err());
    }

    #[test]
    fn the_compressed_data_starts_at_the_first_nonzero_byte_wherever_it_is() {
        for len in [0, 1, 15, 16, 17, 40, 4096] {
            assert_eq!(first_nonzero(&vec![0; len]), None, "{len} zeros");
            for at in 0..len.min(40) {
                let mut v = vec![0u8; len];
                v[at] = 1;
                v[len - 1] |= 2;
                assert_eq!(first_nonzero(&v), Some(at), "{len} bytes, first at {at}");
            }
        }
        let mut v = vec![0u8; 4096];
        v[4000] = 9;
        assert_eq!(first_nonzero(&v), Some(4000));
    }

    #[test]
    fn decode_into_checks_the_buffer_and_the_decoded_length() {
        let data = b"0123456789".repeat(50);
        let block = lz4_block(&data);
        let req = Request {
            algorithm: Algorithm::Lz4,
            out_len: data.len(),
            partial: false,
            zero_padding: true,
            physical: 0,
            lzma_dict_size: 0,
        };
        let mut out = vec![0u8; data.len()];
        decode_into(&req, &block, &mut out).unwrap();
        assert_eq!(out, data);
        assert!(
            decode_into(&req, &block, &mut out[..10]).is_err(),
            "wrong buffer"
        );
        let longer = Request {
            out_len: data.len() + 1,
            ..req
        };
        assert!(
            decode(&longer, &block).is_err(),
            "stream shorter than the extent"
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
