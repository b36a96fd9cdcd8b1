//! `GitlabGcsSigner::Native.http_probe`: one HTTP exchange through the
//! gem's own client (src/probe.rs), for the CLI's `doctor`. Not public API.

use crate::convert::{arg, pairs, text};
use crate::nogvl::without_gvl;
use gcs_signer::probe::{self, ProbeRequest};
use magnus::{function, prelude::*, Error, RArray, RModule, Ruby, Value};
use std::time::Duration;

/// http_probe(method, url, headers, timeout_seconds, direct)
///   -> [status, { lower-case name => value }, body, elapsed_seconds]
fn http_probe(ruby: &Ruby, args: &[Value]) -> Result<RArray, Error> {
    let timeout: f64 = arg(ruby, args, 3, "timeout")?;
    if !(timeout.is_finite() && timeout > 0.0 && timeout <= 300.0) {
        return Err(Error::new(
            ruby.exception_arg_error(),
            format!("timeout must be between 0 and 300 seconds, got {timeout}"),
        ));
    }
    let req = ProbeRequest {
        method: text(ruby, arg(ruby, args, 0, "method")?, "method")?,
        url: text(ruby, arg(ruby, args, 1, "url")?, "url")?,
        headers: pairs(ruby, args, 2, "headers")?,
        timeout: Duration::from_secs_f64(timeout),
        direct: arg(ruby, args, 4, "direct")?,
    };
    let resp = without_gvl(ruby, move |cancel| probe::probe(req, cancel))?;
    let headers = ruby.hash_new();
    for (name, value) in resp.headers {
        headers.aset(name, value)?;
    }
    let out = ruby.ary_new_capa(4);
    out.push(resp.status)?;
    out.push(headers)?;
    out.push(resp.body)?;
    out.push(resp.elapsed.as_secs_f64())?;
    Ok(out)
}

pub fn init(_ruby: &Ruby, native: RModule) -> Result<(), Error> {
    native.define_singleton_method("http_probe", function!(http_probe, -1))?;
    Ok(())
}
