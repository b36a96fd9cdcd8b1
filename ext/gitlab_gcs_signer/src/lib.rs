//! The Ruby binding of gitlab-gcs-signer: argument conversion, GVL release
//! and error mapping, one file each. No signing logic lives here; it is all
//! in the core crate (`gcs_signer`).

mod clock;
mod convert;
mod defaults;
mod errors;
mod nogvl;
mod observe;
mod probe;
mod signer;

use magnus::{prelude::*, Error, Ruby};

#[magnus::init(name = "gitlab_gcs_signer")]
fn init(ruby: &Ruby) -> Result<(), Error> {
    // Before any fork: the at-fork handler that tells a child it is one.
    gcs_signer::process::install();
    let module = ruby.define_module("GitlabGcsSigner")?;
    defaults::init(ruby, module)?;
    convert::init(ruby);
    let native = module.define_module("Native")?;
    convert::define_request_keys(ruby, native)?;
    signer::init(ruby, native)?;
    clock::init(ruby, native)?;
    observe::init(ruby, native)?;
    probe::init(ruby, native)?;
    nogvl::init(ruby, native)?;
    Ok(())
}
