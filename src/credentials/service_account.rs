//! A service-account key file (`"type": "service_account"`): signs locally
//! with RSA PKCS#1 v1.5 SHA-256, no I/O. The key never leaves this struct:
//! not in errors, not in `Debug`.

use crate::blob::{BlobSigner, BoxFuture};
use crate::error::{Error, ErrorKind, Result};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RsaPublicKeyComponents, RSA_PKCS1_SHA256};
use std::fmt;

pub struct ServiceAccountKey {
    email: String,
    private_key_id: Option<String>,
    identity: String,
    key: RsaKeyPair,
    rng: SystemRandom,
}

const PKCS8_LABEL: &str = "PRIVATE KEY";
const PKCS1_LABEL: &str = "RSA PRIVATE KEY";

fn cred_err(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Credentials, message)
}

impl ServiceAccountKey {
    /// Parses the JSON key file Google issues (`gcloud iam service-accounts
    /// keys create`). Errors name the missing or broken field, never its value.
    pub fn from_json(json: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
            // serde_json's message has a line/column, not the input text.
            cred_err(format!("the service account key is not valid JSON ({e})"))
        })?;
        let field = |name: &str| value.get(name).and_then(|v| v.as_str());
        match field("type") {
            Some("service_account") => {}
            Some(other) => {
                return Err(cred_err(format!(
                    "the credentials JSON has \"type\": {other:?}, but signing URLs with a key needs a \
                     \"service_account\" key file (create one with `gcloud iam service-accounts keys create`), \
                     or use keyless signing through the metadata server"
                )))
            }
            None => {
                return Err(cred_err(
                    "the credentials JSON has no \"type\" field; expected a \"service_account\" key file",
                ))
            }
        }
        let email = field("client_email")
            .filter(|e| !e.is_empty())
            .ok_or_else(|| cred_err("the service account key file has no \"client_email\""))?;
        let pem = field("private_key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| cred_err("the service account key file has no \"private_key\""))?;
        let key = parse_pem_key(pem)?;
        let private_key_id = field("private_key_id")
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        let key_tag = match &private_key_id {
            Some(id) => id.clone(),
            None => modulus_fingerprint(&key),
        };
        Ok(ServiceAccountKey {
            identity: format!("key:{email}:{key_tag}"),
            email: email.to_owned(),
            private_key_id,
            key,
            rng: SystemRandom::new(),
        })
    }

    pub fn email(&self) -> &str {
        &self.email
    }

    /// RSA PKCS#1 v1.5 over SHA-256 of `payload`: the signature both V2 and
    /// V4 URLs use. Deterministic, so equal inputs give equal signatures.
    pub fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, payload, &mut signature)
            .map_err(|_| Error::internal("RSA signing with the service account key failed"))?;
        Ok(signature)
    }
}

/// The first 8 bytes of SHA-256 over the public modulus, in hex: names a key
/// without a `private_key_id` and reveals nothing private.
fn modulus_fingerprint(key: &RsaKeyPair) -> String {
    let components: RsaPublicKeyComponents<Vec<u8>> = key.public().into();
    let hash = ring::digest::digest(&ring::digest::SHA256, &components.n);
    crate::encoding::hex_lower(&hash.as_ref()[..8])
}

/// PKCS#8 (`BEGIN PRIVATE KEY`, what Google issues) or PKCS#1
/// (`BEGIN RSA PRIVATE KEY`, what `openssl genrsa -traditional` writes).
fn parse_pem_key(pem: &str) -> Result<RsaKeyPair> {
    let (label, der) = pem_body(pem)?;
    let parsed = match label {
        PKCS8_LABEL => RsaKeyPair::from_pkcs8(&der),
        PKCS1_LABEL => RsaKeyPair::from_der(&der),
        other => {
            return Err(cred_err(format!(
                "the service account \"private_key\" is a PEM {other:?} block; expected \
                 \"PRIVATE KEY\" (PKCS#8) or \"RSA PRIVATE KEY\" (PKCS#1)"
            )))
        }
    };
    // KeyRejected's text is a fixed reason such as "InvalidEncoding".
    parsed.map_err(|e| {
        cred_err(format!(
            "the service account \"private_key\" is not a usable RSA key ({e}); download a new key file"
        ))
    })
}

/// The label and decoded bytes of the first PEM block.
fn pem_body(pem: &str) -> Result<(&str, Vec<u8>)> {
    let no_block = || {
        cred_err("the service account \"private_key\" is not a PEM block (-----BEGIN ... KEY-----)")
    };
    let begin = pem.find("-----BEGIN ").ok_or_else(no_block)?;
    let after_begin = &pem[begin + "-----BEGIN ".len()..];
    let label_end = after_begin.find("-----").ok_or_else(no_block)?;
    let label = &after_begin[..label_end];
    let body_and_rest = &after_begin[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body_and_rest.find(&end_marker).ok_or_else(no_block)?;
    let body: String = body_and_rest[..body_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|_| {
            cred_err("the service account \"private_key\" PEM body is not valid base64")
        })?;
    Ok((label, der))
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("email", &self.email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl BlobSigner for ServiceAccountKey {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn email_now(&self) -> Option<String> {
        Some(self.email.clone())
    }

    fn email(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(std::future::ready(Ok(self.email.clone())))
    }

    fn sign_local(&self, payload: &[u8]) -> Option<Result<Vec<u8>>> {
        Some(ServiceAccountKey::sign(self, payload))
    }

    fn sign(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>> {
        Box::pin(std::future::ready(ServiceAccountKey::sign(self, &payload)))
    }

    fn uses_sign_blob(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_JSON: &str =
        include_str!("../../spec/fixtures/conformance/test_service_account.not-a-test.json");

    fn key_json() -> serde_json::Value {
        serde_json::from_str(KEY_JSON).unwrap()
    }

    fn pem_body_text(pem: &str) -> String {
        pem.lines().filter(|l| !l.starts_with("-----")).collect()
    }

    #[test]
    fn parses_the_conformance_key() {
        let key = ServiceAccountKey::from_json(KEY_JSON).unwrap();
        assert_eq!(
            key.email(),
            "test-iam-credentials@dummy-project-id.iam.gserviceaccount.com"
        );
        let id = key_json()["private_key_id"].as_str().unwrap().to_owned();
        assert_eq!(key.identity(), format!("key:{}:{id}", key.email()));
        assert_eq!(key.email_now().as_deref(), Some(key.email()));
        assert!(!key.uses_sign_blob());
    }

    #[test]
    fn signatures_are_rsa_sha256_and_verify() {
        let key = ServiceAccountKey::from_json(KEY_JSON).unwrap();
        let sig = key.sign(b"hello").unwrap();
        assert_eq!(sig.len(), 256);
        assert_eq!(key.sign_local(b"hello").unwrap().unwrap(), sig);
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.key.public().as_ref(),
        );
        public.verify(b"hello", &sig).unwrap();
        assert!(public.verify(b"hellO", &sig).is_err());
    }

    #[test]
    fn async_sign_matches_local_sign() {
        let key = ServiceAccountKey::from_json(KEY_JSON).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (email, sig) = rt.block_on(async {
            (
                BlobSigner::email(&key).await.unwrap(),
                BlobSigner::sign(&key, b"x".to_vec()).await.unwrap(),
            )
        });
        assert_eq!(email, key.email());
        assert_eq!(sig, key.sign(b"x").unwrap());
    }

    #[test]
    fn debug_and_errors_hide_key_material() {
        let key = ServiceAccountKey::from_json(KEY_JSON).unwrap();
        let pem = key_json()["private_key"].as_str().unwrap().to_owned();
        let debug = format!("{key:?}");
        assert!(debug.contains("<redacted>"));
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!debug.contains(line), "Debug leaks a PEM line");
        }
        // A corrupted key must not echo any of itself back.
        let body = pem_body_text(&pem);
        let broken = pem.replace(&body[..40], &"A".repeat(40));
        let mut v = key_json();
        v["private_key"] = broken.clone().into();
        let err = ServiceAccountKey::from_json(&v.to_string()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Credentials);
        for line in broken.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!err.message().contains(line), "{}", err.message());
        }
        assert!(!err.message().contains(&body[40..80]));
    }

    #[test]
    fn missing_or_wrong_fields_are_credentials_errors() {
        type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|v| v["type"] = "authorized_user".into()),
                "authorized_user",
            ),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("type");
                }),
                "no \"type\"",
            ),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("client_email");
                }),
                "client_email",
            ),
            (Box::new(|v| v["private_key"] = "".into()), "private_key"),
            (Box::new(|v| v["private_key"] = "not a pem".into()), "PEM"),
            (
                Box::new(|v| {
                    v["private_key"] =
                        "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n".into()
                }),
                "base64",
            ),
            (
                Box::new(|v| {
                    v["private_key"] =
                        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
                            .into()
                }),
                "EC PRIVATE KEY",
            ),
        ];
        for (change, needle) in cases {
            let mut v = key_json();
            change(&mut v);
            let err = ServiceAccountKey::from_json(&v.to_string()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Credentials);
            assert!(
                err.message().contains(needle),
                "{needle}: {}",
                err.message()
            );
        }
        let err = ServiceAccountKey::from_json("{").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Credentials);
    }

    /// Reads one DER TLV at `at`: (tag, content range).
    fn der_tlv(der: &[u8], at: usize) -> (u8, std::ops::Range<usize>) {
        let tag = der[at];
        let first = der[at + 1] as usize;
        let (len, start) = if first < 0x80 {
            (first, at + 2)
        } else {
            let n = first & 0x7f;
            let len = der[at + 2..at + 2 + n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | b as usize);
            (len, at + 2 + n)
        };
        (tag, start..start + len)
    }

    #[test]
    fn pkcs1_pem_signs_like_the_pkcs8_original() {
        // PKCS#8 PrivateKeyInfo = SEQUENCE { INTEGER version, SEQUENCE algorithm,
        // OCTET STRING privateKey }; privateKey is the PKCS#1 RSAPrivateKey.
        let pem = key_json()["private_key"].as_str().unwrap().to_owned();
        let (_, der) = pem_body(&pem).unwrap();
        let (tag, outer) = der_tlv(&der, 0);
        assert_eq!(tag, 0x30);
        let (tag, version) = der_tlv(&der, outer.start);
        assert_eq!(tag, 0x02);
        let (tag, algorithm) = der_tlv(&der, version.end);
        assert_eq!(tag, 0x30);
        let (tag, private_key) = der_tlv(&der, algorithm.end);
        assert_eq!(tag, 0x04);
        let pkcs1 = base64::engine::general_purpose::STANDARD.encode(&der[private_key]);
        let pkcs1_pem =
            format!("-----BEGIN RSA PRIVATE KEY-----\n{pkcs1}\n-----END RSA PRIVATE KEY-----\n");

        let mut v = key_json();
        v["private_key"] = pkcs1_pem.into();
        v.as_object_mut().unwrap().remove("private_key_id");
        let pkcs1_key = ServiceAccountKey::from_json(&v.to_string()).unwrap();
        let pkcs8_key = ServiceAccountKey::from_json(KEY_JSON).unwrap();
        assert_eq!(
            pkcs1_key.sign(b"abc").unwrap(),
            pkcs8_key.sign(b"abc").unwrap()
        );
        // Without a private_key_id the identity names the modulus instead.
        let tag = pkcs1_key.identity().rsplit(':').next().unwrap();
        assert_eq!(tag.len(), 16);
        assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(tag, modulus_fingerprint(&pkcs8_key.key));
    }
}
