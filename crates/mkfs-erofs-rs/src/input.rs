//! The `--tar` input stream: a file or standard input, decompressed by magic (gzip, zstd,
//! xz) or as forced, with an optional copy of the decompressed tar and its sha256 (the OCI
//! diff_id) taken while it streams.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// A compression format of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Plain tar.
    None,
    /// gzip, possibly several members.
    Gzip,
    /// zstd, possibly several frames.
    Zstd,
    /// xz.
    Xz,
}

const GZIP: &[u8] = &[0x1f, 0x8b];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ: &[u8] = &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];

/// What was learnt from the stream once it is consumed.
#[derive(Default)]
pub struct Digests {
    /// sha256 of the decompressed tar, every byte to its end (the diff_id).
    pub diff_id: Option<[u8; 32]>,
}

/// Opens `path` (`-`: standard input) as a tar stream. `forced` decompresses regardless of
/// magic; `dump` receives a copy of the decompressed bytes.
pub fn open(
    path: &Path,
    forced: Option<Codec>,
    dump: Option<&Path>,
    digests: Arc<Mutex<Digests>>,
) -> Result<Box<dyn Read + Send>> {
    let raw: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(File::open(path).with_context(|| format!("opening {}", path.display()))?)
    };
    let mut raw = BufReader::with_capacity(1 << 20, raw);
    let head = raw.fill_buf().context("reading the tar stream")?;
    let sniffed = if head.starts_with(GZIP) {
        Codec::Gzip
    } else if head.starts_with(ZSTD) {
        Codec::Zstd
    } else if head.starts_with(XZ) {
        Codec::Xz
    } else {
        Codec::None
    };
    let codec = match forced {
        Some(f) if sniffed != f && !head.is_empty() => {
            bail!(
                "{}: the input is not {f:?} (its first bytes say {sniffed:?})",
                path.display()
            )
        }
        Some(f) => f,
        None => sniffed,
    };
    let plain: Box<dyn Read + Send> = match codec {
        Codec::None => Box::new(raw),
        Codec::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        Codec::Zstd => Box::new(ZstdFrames {
            src: Some(raw),
            dec: None,
        }),
        Codec::Xz => Box::new(XzThread::spawn(raw).context("starting the xz decoder")?),
    };
    let dump = match dump {
        Some(p) => Some(File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => None,
    };
    Ok(Box::new(Tee {
        inner: plain,
        hash: Some(Sha256::new()),
        dump,
        digests,
    }))
}

/// Hashes (and copies) every byte read, to the end of the stream.
struct Tee {
    inner: Box<dyn Read + Send>,
    hash: Option<Sha256>,
    dump: Option<File>,
    digests: Arc<Mutex<Digests>>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            if let Some(h) = self.hash.take() {
                self.digests
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .diff_id = Some(h.finalize().into());
            }
            return Ok(0);
        }
        if let Some(h) = &mut self.hash {
            h.update(&buf[..n]);
        }
        if let Some(d) = &mut self.dump {
            d.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// zstd with any number of frames back to back.
struct ZstdFrames<R: BufRead> {
    src: Option<R>,
    dec: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(d) = &mut self.dec {
                let n = d.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.src = self.dec.take().map(|d| d.into_inner());
            }
            let Some(mut src) = self.src.take() else {
                return Ok(0);
            };
            if src.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let dec = ruzstd::decoding::StreamingDecoder::new(src).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("zstd: {e}"))
            })?;
            self.dec = Some(dec);
        }
    }
}

/// xz, decoded on its own thread (the decoder pushes into a writer) through a pipe.
struct XzThread {
    pipe: std::io::PipeReader,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl XzThread {
    fn spawn<R: BufRead + Send + 'static>(mut src: R) -> std::io::Result<Self> {
        let (pipe, mut w) = std::io::pipe()?;
        let thread = std::thread::spawn(move || {
            loop {
                match lzma_rs::xz_decompress(&mut src, &mut w) {
                    Ok(()) => return Ok(()),
                    // lzma-rs reads one stream and refuses what follows, without consuming
                    // it: after stream padding (zero bytes), another stream may start.
                    Err(lzma_rs::error::Error::XzError(m))
                        if m == "Unexpected data after last XZ block" =>
                    {
                        skip_zeros(&mut src).map_err(|e| format!("xz: {e}"))?;
                        if src.fill_buf().map_err(|e| format!("xz: {e}"))?.is_empty() {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(format!("xz: {e:?}")),
                }
            }
        });
        Ok(Self {
            pipe,
            thread: Some(thread),
        })
    }
}

fn skip_zeros(src: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = src.fill_buf()?;
        let zeros = buf.iter().take_while(|&&b| b == 0).count();
        let all = zeros == buf.len();
        src.consume(zeros);
        if !all || zeros == 0 {
            return Ok(());
        }
    }
}

impl Read for XzThread {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.pipe.read(buf)?;
        if n == 0
            && !buf.is_empty()
            && let Some(t) = self.thread.take()
        {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
                Err(_) => return Err(std::io::Error::other("xz decoder panicked")),
            }
        }
        Ok(n)
    }
}
