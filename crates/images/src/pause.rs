//! The pod sandbox image: the static `pause` program (built from `pause.c` by this crate's
//! build script) as the image's only file, named as the kubelet's default sandbox image. What
//! the node imports at its first start, so that no pod start needs a registry.

use std::io::Write;

use anyhow::Result;

use crate::archive::{ImageConfig, write_archive};

/// The sandbox image's reference: kubelet 1.33's default `--pod-infra-container-image`.
pub const IMAGE: &str = "registry.k8s.io/pause:3.10";

/// The static pause executable.
pub const BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// Writes the pause image archive to `out`; returns its manifest digest.
pub fn write(out: impl Write) -> Result<String> {
    let root = tempdir()?;
    let result = (|| {
        let path = root.join("pause");
        std::fs::write(&path, BINARY)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        let config = ImageConfig {
            name: IMAGE.to_string(),
            entrypoint: vec!["/pause".into()],
            ..Default::default()
        };
        write_archive(&root, &config, out)
    })();
    let _ = std::fs::remove_dir_all(&root);
    result
}

/// A fresh private directory for the image's root (no tempfile dependency at run time).
fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("styrman-pause-{}-{}", std::process::id(), unique()));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_binary_is_a_static_executable() {
        assert_eq!(&BINARY[..4], b"\x7fELF");
        // A statically linked executable has no PT_INTERP (dynamic loader) program header.
        let u16_at = |o: usize| u16::from_le_bytes([BINARY[o], BINARY[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(BINARY[32..40].try_into().unwrap()) as usize;
        let (size, count) = (u16_at(54), u16_at(56));
        const PT_INTERP: u32 = 3;
        for i in 0..count {
            let at = phoff + i * size;
            let kind = u32::from_le_bytes(BINARY[at..at + 4].try_into().unwrap());
            assert_ne!(kind, PT_INTERP, "pause is dynamically linked");
        }
    }

    #[test]
    fn the_pause_image_is_reproducible() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(write(&mut a).unwrap(), write(&mut b).unwrap());
        assert_eq!(a, b);
    }

    #[test]
    fn pause_runs_until_terminated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pause");
        std::fs::write(&path, BINARY).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&path).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "pause exited by itself");
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0));
    }
}
