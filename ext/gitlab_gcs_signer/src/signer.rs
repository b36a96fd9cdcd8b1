//! `GitlabGcsSigner::Native::Signer`, wrapped by `GitlabGcsSigner::Signer`
//! (lib/gitlab_gcs_signer/signer.rb), which owns the keyword arguments.
//! Keyword Hashes come in as they are and are converted once (convert.rs).

use crate::convert::{signer_options, url_request, Request};
use crate::nogvl::{guarded, without_gvl};
use crate::observe::Registration;
use gcs_signer::signer::{Adoption, Lookup, Plan as CorePlan};
use gcs_signer::{Error as CoreError, UrlSigner};
use magnus::value::{LazyId, StaticSymbol};
use magnus::{
    function, method, prelude::*, Error, IntoValue, RArray, RHash, RModule, RString, Ruby, Symbol,
    Value,
};

static HIT: LazyId = LazyId::new("hit");

#[magnus::wrap(class = "GitlabGcsSigner::Native::Signer", free_immediately, size)]
pub struct Signer(
    UrlSigner,
    // Never read: it counts the signer in `Native.process_stats` until Ruby
    // frees this object (src/observe.rs).
    #[allow(dead_code)] Registration,
);

/// A checked request with its expiry window, handed to Ruby between the
/// local cache and the shared one (lib/gitlab_gcs_signer/shared_cache.rb).
#[magnus::wrap(class = "GitlabGcsSigner::Native::Plan", free_immediately, size)]
pub struct Plan(CorePlan);

impl Plan {
    /// When the plan was made (Unix seconds, the signer's clock).
    fn now(&self) -> i64 {
        self.0.now()
    }
}

impl Signer {
    /// new(options): Signer.new's keyword Hash (convert::signer_options).
    fn new(ruby: &Ruby, options: Value) -> Result<Self, Error> {
        let options = signer_options(ruby, options)?;
        let signer = guarded(ruby, || UrlSigner::new(options))?;
        let registration = Registration::new(&signer);
        Ok(Signer(signer, registration))
    }

    /// signed_url(request): signed_url's keyword Hash (convert::url_request).
    fn signed_url(ruby: &Ruby, rb_self: &Self, request: Value) -> Result<RString, Error> {
        Ok(Self::sign(ruby, rb_self, request)?.0)
    }

    /// signed_url_with_status(same arguments) -> [url, status]: :hit (the
    /// cache answered), :miss (signed now) or, for a stale-if-error answer,
    /// [url, :stale, seconds_left, error_kind]. Known exactly here
    /// (comparing stats before and after would race with other threads).
    /// The Ruby layer uses it for instrumentation and to drain log events
    /// after misses only.
    fn signed_url_with_status(
        ruby: &Ruby,
        rb_self: &Self,
        request: Value,
    ) -> Result<RArray, Error> {
        let (url, status) = Self::sign(ruby, rb_self, request)?;
        let out = ruby.ary_new_capa(4);
        out.push(url)?;
        match status {
            // Interned once: a symbol lookup by name on every hit cost
            // about a fifteenth of the hit.
            Status::Hit => out.push(StaticSymbol::from(LazyId::get_inner_with(&HIT, ruby)))?,
            Status::Miss => out.push(ruby.to_symbol("miss"))?,
            Status::Stale(left, error) => {
                out.push(ruby.to_symbol("stale"))?;
                out.push(left)?;
                out.push(ruby.to_symbol(gcs_signer::events::kind_name(error.kind())))?;
            }
        }
        Ok(out)
    }

    fn sign(ruby: &Ruby, rb_self: &Self, request: Value) -> Result<(RString, Status), Error> {
        let Request {
            req,
            expiry,
            timestamp,
        } = url_request(ruby, request)?;
        let signer = &rb_self.0;
        // A hit is answered with the GVL held: it costs microseconds, less
        // than releasing and retaking the GVL.
        let plan = match guarded(ruby, || signer.lookup(req, expiry, timestamp))? {
            Lookup::Hit(hit) => return Ok((ruby.str_new(&hit.url), Status::Hit)),
            Lookup::Miss(plan) => *plan,
        };
        let now = plan.now();
        let answer = without_gvl(ruby, move |cancel| signer.answer_planned(plan, cancel))?;
        let status = match answer.stale {
            None => Status::Miss,
            Some(e) => Status::Stale(answer.entry.usable_until() - now, e),
        };
        Ok((ruby.str_new(&answer.entry.url), status))
    }

    /// lookup(same arguments as signed_url) -> the locally cached URL, or a
    /// Plan for the shared cache level. The hit costs what signed_url's does.
    fn lookup(ruby: &Ruby, rb_self: &Self, request: Value) -> Result<Value, Error> {
        let Request {
            req,
            expiry,
            timestamp,
        } = url_request(ruby, request)?;
        let signer = &rb_self.0;
        Ok(
            match guarded(ruby, || signer.lookup(req, expiry, timestamp))? {
                Lookup::Hit(hit) => ruby.str_new(&hit.url).into_value_with(ruby),
                Lookup::Miss(plan) => Plan(*plan).into_value_with(ruby),
            },
        )
    }

    /// shared_key(plan) -> hex SHA-256 of the email and request, or nil when
    /// the plan is not shared (see UrlSigner::shared_key).
    fn shared_key(ruby: &Ruby, rb_self: &Self, plan: &Plan) -> Result<Option<String>, Error> {
        let signer = &rb_self.0;
        let plan = &plan.0;
        without_gvl(ruby, move |cancel| signer.shared_key(plan, cancel))
    }

    /// sign_plan(plan) -> [url, expires_at, signed_at, from_sign_blob], also
    /// kept in the local cache; for a stale-if-error answer (not to be
    /// published again) [url, expires_at, signed_at, from_sign_blob,
    /// seconds_left, error_kind].
    fn sign_plan(ruby: &Ruby, rb_self: &Self, plan: &Plan) -> Result<RArray, Error> {
        let signer = &rb_self.0;
        let plan = plan.0.clone();
        let now = plan.now();
        let answer = without_gvl(ruby, move |cancel| signer.answer_planned(plan, cancel))?;
        let entry = &answer.entry;
        let out = ruby.ary_new_capa(6);
        out.push(ruby.str_new(&entry.url))?;
        out.push(entry.expires_at)?;
        out.push(entry.signed_at)?;
        out.push(entry.from_sign_blob)?;
        if let Some(e) = answer.stale {
            out.push(entry.usable_until() - now)?;
            out.push(ruby.to_symbol(gcs_signer::events::kind_name(e.kind())))?;
        }
        Ok(out)
    }

    /// keep_refreshed -> nil: keep what background refreshes sign for
    /// take_refreshed (the shared cache publishes it).
    fn keep_refreshed(&self) {
        self.0.keep_refreshed();
    }

    /// take_refreshed -> [[plan, url, expires_at, signed_at, from_sign_blob], ...]
    /// signed by background refreshes since the last call, or nil (no
    /// allocation: it runs after every call while refreshes are shared).
    fn take_refreshed(ruby: &Ruby, rb_self: &Self) -> Result<Option<RArray>, Error> {
        let taken = rb_self.0.take_refreshed();
        if taken.is_empty() {
            return Ok(None);
        }
        let out = ruby.ary_new_capa(taken.len());
        for (plan, entry) in taken {
            let row = ruby.ary_new_capa(5);
            row.push(Plan(plan))?;
            row.push(ruby.str_new(&entry.url))?;
            row.push(entry.expires_at)?;
            row.push(entry.signed_at)?;
            row.push(entry.from_sign_blob)?;
            out.push(row)?;
        }
        Ok(Some(out))
    }

    /// [min_life, min_ratio, probe_interval] or nil.
    fn stale_config(&self) -> Option<(i64, f64, i64)> {
        self.0
            .stale_config()
            .map(|c| (c.min_life, c.min_ratio, c.probe_interval))
    }

    /// [lead, max_quota_share] or nil.
    fn refresh_config(&self) -> Option<(f64, f64)> {
        self.0.refresh_config().map(|c| (c.lead, c.max_quota_share))
    }

    /// adopt(plan, url, expires_at, signed_at, from_sign_blob) -> :taken
    /// (it serves the plan and is now in the local cache), :stale (its expiry
    /// does not fit the plan's window) or :refused (not this request's URL).
    fn adopt(
        ruby: &Ruby,
        rb_self: &Self,
        plan: &Plan,
        url: String,
        expires_at: i64,
        signed_at: i64,
        from_sign_blob: bool,
    ) -> Symbol {
        let outcome = rb_self
            .0
            .adopt(&plan.0, &url, expires_at, signed_at, from_sign_blob);
        ruby.to_symbol(match outcome {
            Adoption::Taken => "taken",
            Adoption::Stale => "stale",
            Adoption::Refused => "refused",
        })
    }

    /// string_to_sign(same arguments as signed_url)
    fn string_to_sign(ruby: &Ruby, rb_self: &Self, request: Value) -> Result<String, Error> {
        let Request {
            req,
            expiry,
            timestamp,
        } = url_request(ruby, request)?;
        let signer = &rb_self.0;
        let plan = guarded(ruby, || signer.plan(req, expiry, timestamp))?;
        without_gvl(ruby, move |cancel| signer.string_to_sign(&plan, cancel))
    }

    fn sign_blob(ruby: &Ruby, rb_self: &Self, bytes: RString) -> Result<RString, Error> {
        // SAFETY: copied before any Ruby code can run.
        let payload = unsafe { bytes.as_slice() }.to_vec();
        let signer = &rb_self.0;
        let sig = without_gvl(ruby, move |cancel| signer.sign_blob(payload, cancel))?;
        Ok(ruby.str_from_slice(&sig))
    }

    fn email(ruby: &Ruby, rb_self: &Self) -> Result<String, Error> {
        let signer = &rb_self.0;
        without_gvl(ruby, move |cancel| signer.email(cancel))
    }

    fn universe_domain(&self) -> String {
        self.0.universe_domain().to_string()
    }

    fn identity(&self) -> String {
        self.0.identity().to_owned()
    }

    fn stats(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        let hash = ruby.hash_new();
        for (name, value) in rb_self.0.stats() {
            hash.aset(ruby.to_symbol(name), value)?;
        }
        Ok(hash)
    }

    /// [extension_ratio, max_extension, max_entries] or nil.
    fn cache_config(&self) -> Option<(f64, i64, usize)> {
        self.0
            .cache_config()
            .map(|c| (c.extension_ratio, c.max_extension, c.max_entries))
    }
}

/// How a signed_url call was answered.
enum Status {
    Hit,
    Miss,
    /// A stale URL with this many seconds left; signing failed with this error.
    Stale(i64, CoreError),
}

pub fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("Signer", ruby.class_object())?;
    class.define_singleton_method("new", function!(Signer::new, 1))?;
    class.define_method("signed_url", method!(Signer::signed_url, 1))?;
    class.define_method(
        "signed_url_with_status",
        method!(Signer::signed_url_with_status, 1),
    )?;
    class.define_method("string_to_sign", method!(Signer::string_to_sign, 1))?;
    class.define_method("lookup", method!(Signer::lookup, 1))?;
    class.define_method("shared_key", method!(Signer::shared_key, 1))?;
    class.define_method("sign_plan", method!(Signer::sign_plan, 1))?;
    class.define_method("adopt", method!(Signer::adopt, 5))?;
    class.define_method("keep_refreshed", method!(Signer::keep_refreshed, 0))?;
    class.define_method("take_refreshed", method!(Signer::take_refreshed, 0))?;
    class.define_method("stale_config", method!(Signer::stale_config, 0))?;
    class.define_method("refresh_config", method!(Signer::refresh_config, 0))?;
    let plan = native.define_class("Plan", ruby.class_object())?;
    plan.undef_default_alloc_func();
    plan.define_method("now", method!(Plan::now, 0))?;
    class.define_method("sign_blob", method!(Signer::sign_blob, 1))?;
    class.define_method("email", method!(Signer::email, 0))?;
    class.define_method("identity", method!(Signer::identity, 0))?;
    class.define_method("universe_domain", method!(Signer::universe_domain, 0))?;
    class.define_method("stats", method!(Signer::stats, 0))?;
    class.define_method("cache_config", method!(Signer::cache_config, 0))?;
    Ok(())
}
