//! Container image references as container runtimes name what they hold.

/// `name` fully qualified as containerd stores it: registry, repository (Docker Hub's official
/// images under `library/`) and a tag, `latest` unless it has a tag or digest. `nginx` is
/// `docker.io/library/nginx:latest`.
pub fn canonical_image_name(name: &str) -> String {
    let (domain, rest) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => ("docker.io", name),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    let (path, digest) = match rest.split_once('@') {
        Some((p, d)) => (p, Some(d)),
        None => (rest, None),
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    match digest {
        Some(d) => format!("{domain}/{path}@{d}"),
        None if path.rsplit('/').next().is_some_and(|last| last.contains(':')) => format!("{domain}/{path}"),
        None => format!("{domain}/{path}:latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fully_qualified() {
        assert_eq!(canonical_image_name("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(canonical_image_name("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(
            canonical_image_name("docker.io/library/nginx:latest"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            canonical_image_name("index.docker.io/library/nginx:1.25"),
            "docker.io/library/nginx:1.25"
        );
        assert_eq!(canonical_image_name("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(
            canonical_image_name("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(canonical_image_name("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(
            canonical_image_name("nginx@sha256:abc"),
            "docker.io/library/nginx@sha256:abc"
        );
    }
}
