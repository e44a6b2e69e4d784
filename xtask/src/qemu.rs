//! Booting the test VM: QEMU command line, KVM probe, serial log capture.

use crate::util::{self, Need, fmt_duration};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What booting needs on the host.
pub const QEMU_NEEDS: &[Need] = &[
    Need {
        package: "qemu-system-x86",
        probe: "qemu-system-x86_64",
    },
    Need {
        package: "busybox-static",
        probe: "/bin/busybox",
    },
    Need {
        package: "coreutils",
        probe: "timeout",
    },
];

/// Accelerator choice on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM if a probe boot shows it works, TCG otherwise.
    Auto,
    /// KVM (`-accel kvm -cpu host`).
    Kvm,
    /// TCG (`-accel tcg,thread=multi -cpu max`).
    Tcg,
}

/// The accelerator in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Emulation.
    Tcg,
}

/// One VM boot.
pub struct Machine<'a> {
    /// bzImage.
    pub kernel: &'a Path,
    /// initramfs (cpio).
    pub initrd: &'a Path,
    /// Disk images, attached read-only as /dev/vda, /dev/vdb, ...
    pub disks: &'a [PathBuf],
    /// Extra `-drive` options by disk index (e.g. QEMU I/O throttling); missing: none.
    pub disk_options: &'a [String],
    /// Guest RAM.
    pub memory_mib: u32,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Accelerator.
    pub accel: Accel,
    /// Where the serial console output goes.
    pub log: &'a Path,
    /// Extra kernel command-line parameters (e.g. `dm-mod.create=...`).
    pub append: &'a [String],
}

/// How a boot ended.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's exit status (`2v+1` after the guest wrote v to isa-debug-exit); 124 on timeout.
    pub status: Option<i32>,
    /// Killed by the timeout.
    pub timed_out: bool,
    /// Serial console output, `\r` removed.
    pub serial: String,
    /// QEMU's own stderr.
    pub stderr: String,
    /// Wall-clock time.
    pub took: Duration,
    /// Stopped because the guest program had not started after [`BOOT_STALL`]: a boot that
    /// hung (TCG sometimes leaves a guest waiting for a timer interrupt); worth one retry.
    pub stalled: bool,
}

/// How long a boot with a long limit may go without the guest program's `ALIVE` line
/// before it is stopped as hung. Normal and debug kernels print it well within a minute
/// under TCG here.
pub const BOOT_STALL: Duration = Duration::from_secs(240);

impl Machine<'_> {
    /// The full command line.
    pub fn command(&self) -> Command {
        let mut c = Command::new("timeout");
        c.arg("--kill-after=10")
            .arg(format!("{}", self.timeout.as_secs().max(1)));
        c.arg("qemu-system-x86_64");
        c.args([
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
        ]);
        match self.accel {
            Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => c.args(["-accel", "tcg,thread=multi", "-cpu", "max"]),
        };
        c.args(["-smp", "2", "-m", &format!("{}M", self.memory_mib)]);
        c.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        c.arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initrd);
        let mut cmdline = String::from("console=ttyS0 panic=-1 pci=noacpi loglevel=5 rdinit=/init");
        for a in self.append {
            cmdline.push(' ');
            cmdline.push_str(a);
        }
        c.arg("-append").arg(cmdline);
        for (i, d) in self.disks.iter().enumerate() {
            let mut spec = std::ffi::OsString::from("file=");
            spec.push(d.as_os_str());
            spec.push(",format=raw,if=virtio,readonly=on");
            if let Some(o) = self.disk_options.get(i).filter(|o| !o.is_empty()) {
                spec.push(",");
                spec.push(o);
            }
            c.arg("-drive").arg(spec);
        }
        c
    }

    /// Boots and waits for the VM to end (or the timeout).
    pub fn boot(&self) -> Result<Outcome> {
        let t = Instant::now();
        let mut c = self.command();
        // runs/<scenario>/serial.log: the scenario's directory names the boot.
        let part = |p: Option<&std::ffi::OsStr>| p.map(|s| s.to_string_lossy().into_owned());
        let name = match (
            part(self.log.parent().and_then(Path::file_name)),
            part(self.log.file_stem()),
        ) {
            (Some(dir), Some(stem)) => format!("{dir}/{stem}"),
            (_, Some(stem)) => stem,
            _ => "qemu".into(),
        };
        eprintln!(
            "qemu: booting {name} ({:?}, at most {})",
            self.accel,
            fmt_duration(self.timeout)
        );
        let _beat = util::Heartbeat::start(format!("qemu: {name}"), || None);
        let log =
            std::fs::File::create(self.log).with_context(|| self.log.display().to_string())?;
        let mut child = c
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", util::show(&c)))?;
        let mut err = child.stderr.take().context("QEMU's stderr")?;
        let stderr = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = std::io::Read::read_to_end(&mut err, &mut s);
            s
        });
        // Only boots with a long limit are watched (not the short KVM probe).
        let watch = self.timeout > 2 * BOOT_STALL;
        let mut alive = false;
        let mut stalled = false;
        let exit = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            std::thread::sleep(Duration::from_millis(500));
            if watch && !alive && !stalled {
                alive = std::fs::read(self.log)
                    .is_ok_and(|b| b.windows(12).any(|w| w == b"@@EROFS ALIV"));
                if !alive && t.elapsed() > BOOT_STALL {
                    // TERM to `timeout`, which passes it on to QEMU.
                    eprintln!(
                        "qemu: {name}: the guest program has not started after {}; stopping it",
                        fmt_duration(BOOT_STALL)
                    );
                    stalled = true;
                    let _ = Command::new("kill")
                        .arg("-TERM")
                        .arg(child.id().to_string())
                        .status();
                }
            }
        };
        let serial = String::from_utf8_lossy(&std::fs::read(self.log)?).replace('\r', "");
        let status = exit.code();
        Ok(Outcome {
            status,
            timed_out: status == Some(124) || status == Some(137),
            serial,
            stderr: String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned(),
            took: t.elapsed(),
            stalled,
        })
    }
}

/// Picks the accelerator: KVM only when a probe boot with it shows the guest alive.
pub fn choose_accel(choice: AccelChoice, kernel: &Path, probe_initrd: &Path, work: &Path) -> Accel {
    match choice {
        AccelChoice::Kvm => return Accel::Kvm,
        AccelChoice::Tcg => return Accel::Tcg,
        AccelChoice::Auto => {}
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("qemu-test: /dev/kvm unusable, using TCG");
        return Accel::Tcg;
    }
    let log = work.join("kvm-probe.log");
    let m = Machine {
        kernel,
        initrd: probe_initrd,
        disks: &[],
        disk_options: &[],
        memory_mib: 256,
        timeout: Duration::from_secs(20),
        accel: Accel::Kvm,
        log: &log,
        append: &[],
    };
    match m.boot() {
        Ok(o) if o.serial.contains("@@EROFS ALIVE") => {
            eprintln!(
                "qemu-test: KVM works (probe boot {}), using it",
                fmt_duration(o.took)
            );
            Accel::Kvm
        }
        Ok(o) => {
            let why = o
                .stderr
                .lines()
                .last()
                .unwrap_or("no sign of life from the guest")
                .to_string();
            eprintln!(
                "qemu-test: KVM probe failed after {} ({why}), using TCG",
                fmt_duration(o.took)
            );
            Accel::Tcg
        }
        Err(e) => {
            eprintln!("qemu-test: KVM probe failed ({e:#}), using TCG");
            Accel::Tcg
        }
    }
}

/// Whether an ELF file asks for a dynamic loader (has a PT_INTERP program header).
pub fn elf_is_dynamic(bytes: &[u8]) -> bool {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return false;
    }
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes([bytes[0x36], bytes[0x37]]) as usize;
    let phnum = u16::from_le_bytes([bytes[0x38], bytes[0x39]]) as usize;
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        bytes
            .get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) == 3)
    })
}
