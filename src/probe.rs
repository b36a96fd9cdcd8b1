//! One plain HTTP exchange through the gem's own client, for the operator
//! CLI's `doctor`: it probes the metadata server, the IAM endpoint's clock
//! and a signed URL with the same HTTP stack (TLS roots, proxy settings,
//! timeouts, the per-process client) that signing uses, so a check cannot
//! pass on a path the signer would not take. Never used to sign.

use crate::body::MAX_BODY;
use crate::cancel::Cancel;
use crate::error::{describe, Error, ErrorKind, Result};
use crate::runtime;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub method: String,
    /// An `http://` or `https://` URL.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// As the metadata client does: never through a proxy
    /// ([`runtime::direct_http`]); else as IAM and OAuth requests go
    /// ([`runtime::http`], which honours the proxy settings).
    pub direct: bool,
}

#[derive(Debug, Clone)]
pub struct ProbeResponse {
    pub status: u16,
    /// Header names lower-cased, values that are not text left out.
    pub headers: Vec<(String, String)>,
    /// At most [`MAX_BODY`] bytes, as text (invalid UTF-8 replaced): unlike
    /// an API answer ([`crate::body::read_capped`]), a longer one is cut,
    /// since the doctor only looks at its beginning.
    pub body: String,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

/// Sends `req` and reads the answer; a transport failure (refused, timed
/// out, TLS) is an [`ErrorKind::Unavailable`] error saying which.
pub fn probe(req: ProbeRequest, cancel: &Cancel) -> Result<ProbeResponse> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| Error::invalid(format!("not an HTTP method: {:?}", req.method)))?;
    let url = reqwest::Url::parse(&req.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| Error::invalid(format!("not an http(s) URL: {:?}", req.url)))?;
    if req.timeout.is_zero() || req.timeout > Duration::from_secs(300) {
        return Err(Error::invalid(
            "probe timeout must be more than 0 and at most 300 seconds",
        ));
    }
    let client = if req.direct {
        runtime::direct_http()?
    } else {
        runtime::http()?
    };
    let deadline = Instant::now() + req.timeout;
    let shown = format!("{method} {}", redacted(&url));
    runtime::block_on(
        async move {
            let started = Instant::now();
            let mut request = client.request(method, url).timeout(req.timeout);
            for (name, value) in &req.headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let transport = |e: reqwest::Error| {
                Error::new(ErrorKind::Unavailable, format!("{shown}: {}", describe(&e)))
            };
            let mut resp = request.send().await.map_err(transport)?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(transport)? {
                let room = MAX_BODY - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() == MAX_BODY {
                    break;
                }
            }
            Ok(ProbeResponse {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                elapsed: started.elapsed(),
            })
        },
        cancel,
        Some(deadline),
    )
}

/// The URL without its query (a signed URL's query is a bearer credential).
fn redacted(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn request(url: String) -> ProbeRequest {
        ProbeRequest {
            method: "GET".into(),
            url,
            headers: vec![("Metadata-Flavor".into(), "Google".into())],
            timeout: Duration::from_secs(5),
            direct: true,
        }
    }

    #[test]
    fn reads_status_headers_and_a_capped_body() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = vec![0; 4096];
            let n = stream.read(&mut seen).unwrap();
            let body = "x".repeat(MAX_BODY + 10);
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n\
                 Metadata-Flavor: Google\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(body.as_bytes()).unwrap();
            String::from_utf8_lossy(&seen[..n]).to_lowercase()
        });
        let resp = probe(
            request(format!(
                "http://127.0.0.1:{port}/computeMetadata/v1/x?secret=1"
            )),
            &Cancel::new(),
        )
        .unwrap();
        let seen = server.join().unwrap();
        assert!(
            seen.starts_with("get /computemetadata/v1/x?secret=1 "),
            "{seen}"
        );
        assert!(seen.contains("metadata-flavor: google"), "{seen}");
        assert_eq!(resp.status, 404);
        assert!(resp
            .headers
            .contains(&("metadata-flavor".into(), "Google".into())));
        assert!(resp
            .headers
            .contains(&("date".into(), "Tue, 14 Nov 2023 22:13:20 GMT".into())));
        assert_eq!(resp.body.len(), MAX_BODY);
    }

    #[test]
    fn a_refused_connection_is_unavailable_and_hides_the_query() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = probe(
            request(format!("http://127.0.0.1:{port}/o?X-Goog-Signature=abc")),
            &Cancel::new(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        // The root cause, not reqwest's "client error (Connect)" wrapper.
        assert!(err.message().to_lowercase().contains("refused"), "{err}");
        assert!(
            err.message().contains(&format!("127.0.0.1:{port}/o")),
            "{err}"
        );
        assert!(!err.message().contains("abc"), "{err}");
    }

    #[test]
    fn refuses_what_is_not_an_http_request() {
        for (method, url) in [
            ("GET", "file:///etc/passwd"),
            ("GET", "not a url"),
            ("GE T", "http://127.0.0.1/"),
        ] {
            let mut req = request(url.into());
            req.method = method.into();
            let err = probe(req, &Cancel::new()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{method} {url}");
        }
    }
}
