//! `GitlabGcsSigner::DEFAULTS`: the core's defaults and limits
//! (`gcs_signer::config::DEFAULTS`) as a frozen Hash of frozen Hashes, so
//! Ruby code reads them instead of repeating a number.

use gcs_signer::config::{Value as Default, DEFAULTS};
use magnus::{prelude::*, Error, RModule, Ruby, Value};

pub fn init(ruby: &Ruby, module: RModule) -> Result<(), Error> {
    let all = ruby.hash_new();
    for (section, entries) in DEFAULTS {
        let hash = ruby.hash_new();
        for (name, value) in *entries {
            let value: Value = match value {
                Default::Int(i) => ruby.integer_from_i64(*i).as_value(),
                Default::Float(f) => ruby.float_from_f64(*f).as_value(),
                Default::Text(s) => {
                    let s = ruby.str_new(s);
                    s.freeze();
                    s.as_value()
                }
            };
            hash.aset(ruby.to_symbol(name), value)?;
        }
        hash.freeze();
        all.aset(ruby.to_symbol(section), hash)?;
    }
    all.freeze();
    module.const_set("DEFAULTS", all)
}
