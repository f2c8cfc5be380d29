//! `styrman images`: images without a registry. `pack` writes an OCI image archive from a root
//! filesystem directory (what `scripts/images` builds the test and air-gap images with);
//! `pause` writes the pod sandbox image. Both archives load with `ctr images import`,
//! `docker load` or, on a styrman node, from `DATA_DIR/agent/images/` (k3s's air-gap layout).

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    command: ImagesCommand,
}

#[derive(clap::Subcommand)]
enum ImagesCommand {
    /// Write an OCI image archive of a directory (its root filesystem)
    Pack(PackArgs),
    /// Write the pod sandbox (pause) image archive
    Pause {
        /// The archive to write
        #[arg(long, short)]
        output: PathBuf,
    },
}

#[derive(clap::Args)]
struct PackArgs {
    /// The directory that becomes the image's root filesystem
    #[arg(long)]
    rootfs: PathBuf,
    /// The image's full reference, e.g. docker.io/library/busybox:latest
    #[arg(long)]
    name: String,
    /// The image's entrypoint, one argument per flag (`--entrypoint=-x` for a leading dash)
    #[arg(long = "entrypoint", allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// The image's default arguments (`Cmd`), one per flag
    #[arg(long = "cmd", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// An environment variable, KEY=value (repeatable)
    #[arg(long = "env")]
    env: Vec<String>,
    /// The working directory of its processes
    #[arg(long)]
    workdir: Option<String>,
    /// A port it serves on, e.g. 80/tcp (repeatable)
    #[arg(long = "expose")]
    expose: Vec<String>,
    /// The archive to write
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run(args: ImagesArgs) -> Result<()> {
    match args.command {
        ImagesCommand::Pack(pack) => {
            let config = styrman_images::ImageConfig {
                name: pack.name,
                entrypoint: pack.entrypoint,
                cmd: pack.cmd,
                env: pack.env,
                working_dir: pack.workdir,
                exposed_ports: pack.expose,
            };
            let digest = write_to(&pack.output, |out| {
                styrman_images::write_archive(&pack.rootfs, &config, out)
            })?;
            println!("{} {digest}", config.name);
        }
        ImagesCommand::Pause { output } => {
            let digest = write_to(&output, |out| styrman_images::pause::write(out))?;
            println!("{} {digest}", styrman_images::pause::IMAGE);
        }
    }
    Ok(())
}

/// Writes an archive through a temporary file renamed into place, so a failed write leaves
/// no partial archive that an importer would choke on.
fn write_to(
    path: &PathBuf,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<String>,
) -> Result<String> {
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial).with_context(|| format!("{}", partial.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let written = write(&mut out).and_then(|digest| {
        use std::io::Write;
        out.flush()?;
        out.get_ref().sync_all()?;
        Ok(digest)
    });
    match written {
        Ok(digest) => {
            std::fs::rename(&partial, path).with_context(|| format!("{}", path.display()))?;
            Ok(digest)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}
