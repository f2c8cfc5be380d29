//! YAML request bodies. Manifests are written for kubectl, whose YAML is 1.1: `0644` is octal.

use serde_json::Value;

use crate::status::{ApiError, ApiResult};

pub fn to_json(body: &[u8]) -> ApiResult<Value> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    serde_saphyr::from_str_with_options::<Value>(text, options)
        .map_err(|e| ApiError::bad_request(format!("the body of the request could not be decoded as YAML: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn octal_modes_are_numbers() {
        let v = super::to_json(b"kind: ConfigMap\nmode: 0644\nflag: yes\n").unwrap();
        assert_eq!(v["mode"], 420);
        assert_eq!(v["kind"], "ConfigMap");
    }
}
