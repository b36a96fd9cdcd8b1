//! Ruby values to core types. The Ruby layer (lib/gitlab_gcs_signer/signer.rb)
//! has already checked types and normalised keyword arguments; this only
//! converts, and reports anything unexpected as `ArgumentError`.

use magnus::value::ReprValue;
use magnus::{Error, RArray, RString, Ruby, TryConvert, Value};

pub fn arg<T: TryConvert>(ruby: &Ruby, args: &[Value], i: usize, name: &str) -> Result<T, Error> {
    let value = args
        .get(i)
        .copied()
        .ok_or_else(|| Error::new(ruby.exception_arg_error(), format!("missing {name}")))?;
    T::try_convert(value).map_err(|e| {
        Error::new(
            ruby.exception_arg_error(),
            format!("{name}: {}", e.to_string().replace('\n', " ")),
        )
    })
}

/// A Ruby String as UTF-8 text: invalid byte sequences are an `ArgumentError`
/// rather than something signed.
pub fn text(ruby: &Ruby, value: Value, name: &str) -> Result<String, Error> {
    let s = RString::try_convert(value).map_err(|_| {
        Error::new(
            ruby.exception_arg_error(),
            format!("{name} must be a String"),
        )
    })?;
    // SAFETY: the bytes are copied before any Ruby code can run.
    let bytes = unsafe { s.as_slice() }.to_vec();
    String::from_utf8(bytes).map_err(|_| {
        Error::new(
            ruby.exception_arg_error(),
            format!("{name} is not valid UTF-8"),
        )
    })
}

pub fn opt_text(
    ruby: &Ruby,
    args: &[Value],
    i: usize,
    name: &str,
) -> Result<Option<String>, Error> {
    let value: Option<Value> = arg(ruby, args, i, name)?;
    match value {
        Some(v) if !v.is_nil() => Ok(Some(text(ruby, v, name)?)),
        _ => Ok(None),
    }
}

pub fn req_text(ruby: &Ruby, args: &[Value], i: usize, name: &str) -> Result<String, Error> {
    opt_text(ruby, args, i, name)?
        .ok_or_else(|| Error::new(ruby.exception_arg_error(), format!("{name} is required")))
}

/// An Array of `[name, value]` String pairs.
pub fn pairs(
    ruby: &Ruby,
    args: &[Value],
    i: usize,
    name: &str,
) -> Result<Vec<(String, String)>, Error> {
    let list: RArray = arg(ruby, args, i, name)?;
    (0..list.len())
        .map(|j| {
            let pair: RArray = list.entry(j as isize)?;
            if pair.len() != 2 {
                return Err(Error::new(
                    ruby.exception_arg_error(),
                    format!("{name} must be name/value pairs"),
                ));
            }
            Ok((
                text(ruby, pair.entry(0)?, name)?,
                text(ruby, pair.entry(1)?, name)?,
            ))
        })
        .collect()
}
