//! `styrman images`: images without a registry. `pack` writes an OCI image archive from a root
//! filesystem directory (what `scripts/images` builds the test and air-gap images with);
//! `pause` writes the pod sandbox image. Both archives load with `ctr images import`,
//! `docker load` or, on a styrman node, from `DATA_DIR/agent/images/` (k3s's air-gap layout).
//! `import`, `ls` and `rm` work on a node's runtime: its own containerd under `DATA_DIR`, or
//! `--container-runtime-endpoint` (`styrman_kubelet::images`).

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
    /// Load OCI or docker image archives into the node's runtime
    Import {
        /// The archives
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        node: NodeRuntime,
    },
    /// List the node's images
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        node: NodeRuntime,
    },
    /// Remove images from the node, by reference or id
    #[command(alias = "remove")]
    Rm {
        /// The images
        #[arg(required = true)]
        images: Vec<String>,
        #[command(flatten)]
        node: NodeRuntime,
    },
}

/// Which node's runtime.
#[derive(clap::Args)]
struct NodeRuntime {
    /// The node's data directory: its own containerd is DATA_DIR/agent/containerd
    #[arg(long, default_value = "/var/lib/styrman")]
    data_dir: PathBuf,
    /// A CRI socket to use instead (import needs containerd's)
    #[arg(long)]
    container_runtime_endpoint: Option<String>,
}

impl NodeRuntime {
    fn socket(&self) -> PathBuf {
        match &self.container_runtime_endpoint {
            Some(endpoint) => PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint)),
            None => styrman_kubelet::containerd::ContainerdLayout::new(self.data_dir.join("agent").join("containerd"))
                .socket(),
        }
    }

    async fn connect(&self) -> Result<styrman_kubelet::cri::Runtime> {
        let socket = self.socket();
        styrman_kubelet::cri::Runtime::connect(&socket.to_string_lossy())
            .await
            .with_context(|| "is the node running? (styrman server or styrman agent)")
    }
}

/// The commands on a node's runtime.
async fn on_node(command: ImagesCommand) -> Result<()> {
    match command {
        ImagesCommand::Import { files, node } => {
            let socket = node.socket();
            anyhow::ensure!(
                socket.exists(),
                "no runtime socket at {}: is the node running?",
                socket.display()
            );
            for file in files {
                let imported = styrman_kubelet::images::import(&socket, &file)
                    .await
                    .with_context(|| format!("cannot import {}", file.display()))?;
                println!("{imported}");
            }
        }
        ImagesCommand::Ls { node } => {
            let rows = styrman_kubelet::images::list(&node.connect().await?).await?;
            let header = ["IMAGE", "TAG", "IMAGE ID", "SIZE"].map(String::from);
            let widths: Vec<usize> = (0..4)
                .map(|i| {
                    std::iter::once(&header)
                        .chain(&rows)
                        .map(|r| r[i].len())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for row in std::iter::once(&header).chain(&rows) {
                let line: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(cell, width)| format!("{cell:<width$}"))
                    .collect();
                println!("{}", line.join("   ").trim_end());
            }
        }
        ImagesCommand::Rm { images, node } => {
            let runtime = node.connect().await?;
            for image in images {
                styrman_kubelet::images::remove(&runtime, &image).await?;
                println!("Deleted: {image}");
            }
        }
        ImagesCommand::Pack(_) | ImagesCommand::Pause { .. } => unreachable!("not a node command"),
    }
    Ok(())
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
        command @ (ImagesCommand::Import { .. } | ImagesCommand::Ls { .. } | ImagesCommand::Rm { .. }) => {
            return crate::run_async(on_node(command));
        }
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
