//! Observability for the Ruby layer (lib/gitlab_gcs_signer/observability.rb):
//! `Native.drain_events` (the core's event queue, src/events.rs, turned into
//! Hashes for the Ruby logger), `Native.process_stats` and
//! `Native.signer_stats`. The figures and their arithmetic (live + retired
//! signers, gauges, what is summed) are the core's (src/process_stats.rs);
//! this file only converts them.

use gcs_signer::events::{self, Event};
use gcs_signer::process_stats;
pub use gcs_signer::process_stats::Registration;
use magnus::{function, prelude::*, Error, RArray, RHash, RModule, Ruby};

/// `Native.process_stats` -> { name => Integer }.
fn process_stats(ruby: &Ruby) -> Result<RHash, Error> {
    let hash = ruby.hash_new();
    for (name, value) in process_stats::totals() {
        hash.aset(ruby.to_symbol(name), value)?;
    }
    Ok(hash)
}

/// `Native.signer_stats` -> [{identity:, hits:, ...}, ...], one per live
/// signer, in creation order.
fn signer_stats(ruby: &Ruby) -> Result<RArray, Error> {
    let snapshot = process_stats::live_signers();
    let list = ruby.ary_new_capa(snapshot.len());
    for (identity, stats) in snapshot {
        let h = ruby.hash_new();
        h.aset(ruby.to_symbol("identity"), identity)?;
        for (name, value) in stats {
            h.aset(ruby.to_symbol(name), value)?;
        }
        list.push(h)?;
    }
    Ok(list)
}

/// `Native.drain_events` -> [[{type:, ...}, ...], dropped_since_last_drain].
fn drain_events(ruby: &Ruby) -> Result<RArray, Error> {
    let (records, dropped) = events::drain();
    let list = ruby.ary_new_capa(records.len());
    for record in records {
        let h = ruby.hash_new();
        h.aset(ruby.to_symbol("at"), record.at)?;
        let sym = |s: &str| ruby.to_symbol(s);
        match record.event {
            Event::Retry {
                service,
                kind,
                message,
                delay,
            } => {
                h.aset(sym("type"), sym("retry"))?;
                h.aset(sym("service"), sym(service))?;
                h.aset(sym("kind"), sym(events::kind_name(kind)))?;
                h.aset(sym("message"), message)?;
                h.aset(sym("delay"), delay.as_secs_f64())?;
            }
            Event::TokenRefreshed { expires_in } => {
                h.aset(sym("type"), sym("token_refreshed"))?;
                h.aset(sym("expires_in"), expires_in.as_secs())?;
            }
            Event::TokenRefreshFailed { kind, message } => {
                h.aset(sym("type"), sym("token_refresh_failed"))?;
                h.aset(sym("kind"), sym(events::kind_name(kind)))?;
                h.aset(sym("message"), message)?;
            }
            Event::SignBlobFailed { kind, message } => {
                h.aset(sym("type"), sym("sign_blob_failed"))?;
                h.aset(sym("kind"), sym(events::kind_name(kind)))?;
                h.aset(sym("message"), message)?;
            }
            Event::Throttled { reason } => {
                h.aset(sym("type"), sym("throttled"))?;
                h.aset(sym("reason"), sym(reason))?;
            }
            Event::StaleServed {
                kind,
                message,
                remaining,
                min_life,
            } => {
                h.aset(sym("type"), sym("stale_served"))?;
                h.aset(sym("kind"), sym(events::kind_name(kind)))?;
                h.aset(sym("message"), message)?;
                h.aset(sym("remaining"), remaining)?;
                h.aset(sym("min_life"), min_life)?;
            }
        }
        list.push(h)?;
    }
    let out = ruby.ary_new_capa(2);
    out.push(list)?;
    out.push(dropped)?;
    Ok(out)
}

pub fn init(_ruby: &Ruby, native: RModule) -> Result<(), Error> {
    native.define_singleton_method("drain_events", function!(drain_events, 0))?;
    native.define_singleton_method("process_stats", function!(process_stats, 0))?;
    native.define_singleton_method("signer_stats", function!(signer_stats, 0))?;
    Ok(())
}
