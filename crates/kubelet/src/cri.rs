//! The Container Runtime Interface client: CRI `runtime.v1` (RuntimeService and ImageService)
//! over the runtime's Unix socket, as the kubelet's remote runtime does it. The runtime is
//! containerd with runc; nothing here depends on which.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_openapi::api::core::v1::ContainerImage;
use tonic::transport::{Channel, Endpoint};

/// The two CRI services of one runtime, sharing one connection.
#[derive(Clone)]
pub struct Runtime {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

impl Runtime {
    /// Connects to the runtime at `socket` (a path, or `unix://` and a path) and checks that
    /// it speaks CRI v1: `Version` answers.
    pub async fn connect(socket: &str) -> Result<Runtime> {
        let path = PathBuf::from(socket.strip_prefix("unix://").unwrap_or(socket));
        let channel = unix_channel(&path)
            .await
            .with_context(|| format!("cannot reach the container runtime at {}", path.display()))?;
        let mut runtime = RuntimeServiceClient::new(channel.clone());
        runtime
            .version(k8s_cri::v1::VersionRequest::default())
            .await
            .with_context(|| format!("the container runtime at {} does not speak CRI v1", path.display()))?;
        Ok(Runtime {
            runtime,
            images: ImageServiceClient::new(channel),
        })
    }

    /// The runtime's name and version, as `Node.status.nodeInfo.containerRuntimeVersion` shows
    /// them: `containerd://1.6.20~ds1`.
    pub async fn version(&self) -> Result<String> {
        let version = self
            .runtime
            .clone()
            .version(k8s_cri::v1::VersionRequest::default())
            .await?
            .into_inner();
        Ok(format!("{}://{}", version.runtime_name, version.runtime_version))
    }
}

impl Runtime {
    /// Whether the runtime holds `image` (a reference as a pod names it).
    pub async fn has_image(&self, image: &str) -> Result<bool> {
        Ok(self.image_ref(image).await?.is_some())
    }

    /// The image's id (`sha256:...`) when the runtime holds it.
    pub async fn image_ref(&self, image: &str) -> Result<Option<String>> {
        let status = self
            .images
            .clone()
            .image_status(k8s_cri::v1::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            })
            .await?
            .into_inner();
        Ok(status.image.map(|i| i.id))
    }

    /// Pulls `image` from its registry; the image's id.
    pub async fn pull(&self, image: &str) -> std::result::Result<String, tonic::Status> {
        let pulled = self
            .images
            .clone()
            .pull_image(k8s_cri::v1::PullImageRequest {
                image: Some(image_spec(image)),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(pulled.image_ref)
    }
}

impl Runtime {
    /// The running containers whose labels include `selector` (all of them when it is empty).
    pub async fn running_containers(
        &self,
        selector: HashMap<String, String>,
    ) -> std::result::Result<Vec<cri::Container>, tonic::Status> {
        let filter = cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            label_selector: selector,
            ..Default::default()
        };
        let listed = self
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest { filter: Some(filter) })
            .await?;
        Ok(listed.into_inner().containers)
    }

    /// The ready pod sandboxes whose labels include `selector` (all when it is empty).
    pub async fn ready_sandboxes(
        &self,
        selector: HashMap<String, String>,
    ) -> std::result::Result<Vec<cri::PodSandbox>, tonic::Status> {
        let filter = cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32,
            }),
            label_selector: selector,
            ..Default::default()
        };
        let listed = self
            .runtime
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) })
            .await?;
        Ok(listed.into_inner().items)
    }
}

fn image_spec(image: &str) -> k8s_cri::v1::ImageSpec {
    k8s_cri::v1::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// At most this many images go into `Node.status.images` (the kubelet's
/// `nodeStatusMaxImages`), the largest first.
const MAX_NODE_IMAGES: usize = 50;

impl Runtime {
    /// The images on the node as `Node.status.images` lists them: digests then tags as
    /// names, largest first.
    pub async fn node_images(&self) -> Result<Vec<ContainerImage>> {
        let listed = self
            .images
            .clone()
            .list_images(k8s_cri::v1::ListImagesRequest::default())
            .await?
            .into_inner()
            .images;
        let mut images: Vec<ContainerImage> = listed
            .into_iter()
            .map(|image| ContainerImage {
                names: Some(image.repo_digests.into_iter().chain(image.repo_tags).collect()),
                size_bytes: i64::try_from(image.size).ok(),
            })
            .collect();
        images.sort_by_key(|i| std::cmp::Reverse(i.size_bytes));
        images.truncate(MAX_NODE_IMAGES);
        Ok(images)
    }
}

/// A gRPC channel over a Unix socket (the URI is a placeholder; every connection goes to the
/// socket).
async fn unix_channel(path: &Path) -> Result<Channel> {
    let path = path.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:0")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await?;
    Ok(channel)
}
