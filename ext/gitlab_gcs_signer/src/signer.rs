//! `GitlabGcsSigner::Native::Signer`, wrapped by `GitlabGcsSigner::Signer`
//! (lib/gitlab_gcs_signer/signer.rb), which owns the keyword arguments.
//! Positional arguments here, in the order signer.rb passes them.

use crate::clock::ManualClock;
use crate::convert::{arg, opt_text, pairs, req_text};
use crate::nogvl::{guarded, without_gvl};
use crate::observe::Registration;
use gcs_signer::cache::CacheConfig;
use gcs_signer::credentials::CredentialOptions;
use gcs_signer::refresh::RefreshConfig;
use gcs_signer::signer::{Adoption, Expiry, Plan as CorePlan, SignerOptions};
use gcs_signer::stale::StaleConfig;
use gcs_signer::{Error as CoreError, UrlRequest, UrlSigner, UrlStyle, Version};
use magnus::{
    function, method, prelude::*, Error, IntoValue, RArray, RHash, RModule, RString, Ruby, Symbol,
    Value,
};
use std::time::Duration;

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
    /// new(credentials, service_account_email, metadata_host, iam_endpoint,
    ///     delegates, cache [ratio, max_extension, max_entries] | nil,
    ///     timeout, max_per_minute, max_in_flight, clock | nil,
    ///     stale [min_life, min_ratio, probe_interval] | nil,
    ///     refresh [lead, max_quota_share] | nil)
    fn new(ruby: &Ruby, args: &[Value]) -> Result<Self, Error> {
        let mut credentials = CredentialOptions {
            credentials: opt_text(ruby, args, 0, "credentials")?,
            service_account_email: opt_text(ruby, args, 1, "service_account_email")?,
            metadata_host: opt_text(ruby, args, 2, "metadata_host")?,
            iam_endpoint: opt_text(ruby, args, 3, "iam_endpoint")?,
            delegates: arg(ruby, args, 4, "delegates")?,
            ..CredentialOptions::default()
        };
        let cache: Option<(f64, i64, usize)> = arg(ruby, args, 5, "cache")?;
        let timeout: f64 = arg(ruby, args, 6, "timeout")?;
        credentials.quota.max_per_minute = arg(ruby, args, 7, "max_sign_blob_per_minute")?;
        credentials.quota.max_in_flight = arg(ruby, args, 8, "max_sign_blob_in_flight")?;
        let clock: Option<&ManualClock> = arg(ruby, args, 9, "clock")?;
        let stale: Option<(i64, f64, i64)> = arg(ruby, args, 10, "stale_if_error")?;
        let refresh: Option<(f64, f64)> = arg(ruby, args, 11, "refresh_ahead")?;
        if !(timeout.is_finite() && timeout > 0.0 && timeout <= 3600.0) {
            return Err(Error::new(
                ruby.exception_arg_error(),
                format!("timeout must be between 0 and 3600 seconds, got {timeout}"),
            ));
        }
        let timeout = Duration::from_secs_f64(timeout);
        credentials.timeout = timeout;
        let mut options = SignerOptions {
            credentials,
            cache: cache.map(
                |(extension_ratio, max_extension, max_entries)| CacheConfig {
                    extension_ratio,
                    max_extension,
                    max_entries,
                },
            ),
            timeout,
            stale: stale.map(|(min_life, min_ratio, probe_interval)| StaleConfig {
                min_life,
                min_ratio,
                probe_interval,
            }),
            refresh: refresh.map(|(lead, max_quota_share)| RefreshConfig {
                lead,
                max_quota_share,
            }),
            ..SignerOptions::default()
        };
        if let Some(clock) = clock {
            options.clock = clock.0.clone();
        }
        let signer = guarded(ruby, || UrlSigner::new(options))?;
        let registration = Registration::new(&signer);
        Ok(Signer(signer, registration))
    }

    /// signed_url(version, method, bucket, object, headers, query, scheme,
    ///            host, style, bucket_bound_hostname, v2_path,
    ///            expires_in, expires_at, timestamp)
    fn signed_url(ruby: &Ruby, rb_self: &Self, args: &[Value]) -> Result<RString, Error> {
        Ok(Self::sign(ruby, rb_self, args)?.0)
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
        args: &[Value],
    ) -> Result<RArray, Error> {
        let (url, status) = Self::sign(ruby, rb_self, args)?;
        let out = ruby.ary_new_capa(4);
        out.push(url)?;
        match status {
            Status::Hit => out.push(ruby.to_symbol("hit"))?,
            Status::Miss => out.push(ruby.to_symbol("miss"))?,
            Status::Stale(left, error) => {
                out.push(ruby.to_symbol("stale"))?;
                out.push(left)?;
                out.push(ruby.to_symbol(gcs_signer::events::kind_name(error.kind())))?;
            }
        }
        Ok(out)
    }

    fn sign(ruby: &Ruby, rb_self: &Self, args: &[Value]) -> Result<(RString, Status), Error> {
        let (req, expiry, timestamp) = request(ruby, args)?;
        let signer = &rb_self.0;
        // A hit is answered with the GVL held: it costs microseconds, less
        // than releasing and retaking the GVL.
        let plan = guarded(ruby, || signer.plan(req, expiry, timestamp))?;
        if let Some(hit) = signer.try_cached(&plan) {
            return Ok((ruby.str_new(&hit.url), Status::Hit));
        }
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
    fn lookup(ruby: &Ruby, rb_self: &Self, args: &[Value]) -> Result<Value, Error> {
        let (req, expiry, timestamp) = request(ruby, args)?;
        let signer = &rb_self.0;
        let plan = guarded(ruby, || signer.plan(req, expiry, timestamp))?;
        Ok(match signer.try_cached(&plan) {
            Some(hit) => ruby.str_new(&hit.url).into_value_with(ruby),
            None => Plan(plan).into_value_with(ruby),
        })
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
    fn string_to_sign(ruby: &Ruby, rb_self: &Self, args: &[Value]) -> Result<String, Error> {
        let (req, expiry, timestamp) = request(ruby, args)?;
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

/// The request, expiry and timestamp from signed_url's positional arguments.
fn request(ruby: &Ruby, args: &[Value]) -> Result<(UrlRequest, Expiry, Option<i64>), Error> {
    let version = match req_text(ruby, args, 0, "version")?.as_str() {
        "v2" => Version::V2,
        "v4" => Version::V4,
        other => {
            return Err(arg_error(
                ruby,
                format!("unknown version {other:?}: use :v2 or :v4"),
            ))
        }
    };
    let style = match req_text(ruby, args, 8, "url_style")?.as_str() {
        "path" => UrlStyle::Path,
        "virtual_hosted" => UrlStyle::VirtualHosted,
        "bucket_bound_hostname" => UrlStyle::BucketBound(
            opt_text(ruby, args, 9, "bucket_bound_hostname")?.ok_or_else(|| {
                arg_error(
                    ruby,
                    "url_style: :bucket_bound_hostname needs bucket_bound_hostname:".into(),
                )
            })?,
        ),
        other => {
            return Err(arg_error(
                ruby,
                format!(
                "unknown url_style {other:?}: use :path, :virtual_hosted or :bucket_bound_hostname"
            ),
            ))
        }
    };
    let req = UrlRequest {
        version,
        method: req_text(ruby, args, 1, "method")?,
        bucket: req_text(ruby, args, 2, "bucket")?,
        object: req_text(ruby, args, 3, "object")?,
        headers: pairs(ruby, args, 4, "headers")?,
        query: pairs(ruby, args, 5, "query")?,
        scheme: req_text(ruby, args, 6, "scheme")?,
        host: opt_text(ruby, args, 7, "host")?,
        style,
        v2_path: opt_text(ruby, args, 10, "v2_path")?,
    };
    let expires_in: Option<f64> = arg(ruby, args, 11, "expires_in")?;
    let expires_at: Option<f64> = arg(ruby, args, 12, "expires_at")?;
    let timestamp: Option<i64> = arg(ruby, args, 13, "timestamp")?;
    let expiry = match (expires_in, expires_at) {
        (Some(secs), None) => Expiry::In(secs),
        (None, Some(at)) => Expiry::At(at),
        _ => {
            return Err(arg_error(
                ruby,
                "give exactly one of expires_in: or expires_at:".into(),
            ))
        }
    };
    Ok((req, expiry, timestamp))
}

fn arg_error(ruby: &Ruby, message: String) -> Error {
    Error::new(ruby.exception_arg_error(), message)
}

#[allow(dead_code)]
fn core_error(ruby: &Ruby, err: CoreError) -> Error {
    crate::errors::to_ruby(ruby, err)
}

pub fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("Signer", ruby.class_object())?;
    class.define_singleton_method("new", function!(Signer::new, -1))?;
    class.define_method("signed_url", method!(Signer::signed_url, -1))?;
    class.define_method(
        "signed_url_with_status",
        method!(Signer::signed_url_with_status, -1),
    )?;
    class.define_method("string_to_sign", method!(Signer::string_to_sign, -1))?;
    class.define_method("lookup", method!(Signer::lookup, -1))?;
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
    class.define_method("stats", method!(Signer::stats, 0))?;
    class.define_method("cache_config", method!(Signer::cache_config, 0))?;
    Ok(())
}
