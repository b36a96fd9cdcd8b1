//! Ruby values to core types. The Ruby layer (lib/gitlab_gcs_signer/signer.rb)
//! owns the keyword arguments and their defaults; strings and name/value
//! Hashes are checked here, where it costs less than in Ruby on the cache-hit
//! path (bench/hit_cost.rb). Anything unexpected is an `ArgumentError`.

use magnus::encoding::EncodingCapable;
use magnus::value::ReprValue;
use magnus::{Error, RArray, RHash, RString, Ruby, Symbol, TryConvert, Value};

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

/// A Ruby String as UTF-8 text. Another encoding is converted with
/// `String#encode`; invalid byte sequences and NUL bytes are an
/// `ArgumentError` rather than something signed.
pub fn text(ruby: &Ruby, value: Value, name: &str) -> Result<String, Error> {
    text_named(ruby, value, || name.to_owned())
}

/// [`text`], with the argument's name built only for an error message.
fn text_named(ruby: &Ruby, value: Value, name: impl Fn() -> String) -> Result<String, Error> {
    let Some(s) = RString::from_value(value) else {
        return Err(arg_error(
            ruby,
            format!("{} must be a String, got {}", name(), class_name(value)),
        ));
    };
    let index = s.enc_get();
    // SAFETY (both slices): the bytes are copied before any Ruby code runs.
    let bytes = if index == ruby.utf8_encindex() || index == ruby.usascii_encindex() {
        unsafe { s.as_slice() }.to_vec()
    } else {
        let converted: RString = s.funcall("encode", ("UTF-8",)).map_err(|e| {
            let why = e.to_string();
            arg_error(
                ruby,
                format!("{} cannot be converted to UTF-8 ({why})", name()),
            )
        })?;
        unsafe { converted.as_slice() }.to_vec()
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| arg_error(ruby, format!("{} is not valid UTF-8", name())))?;
    if text.contains('\0') {
        return Err(arg_error(ruby, format!("{} contains a NUL byte", name())));
    }
    Ok(text)
}

fn class_name(value: Value) -> String {
    // SAFETY: the class name is copied at once.
    unsafe { value.classname() }.into_owned()
}

fn arg_error(ruby: &Ruby, message: String) -> Error {
    Error::new(ruby.exception_arg_error(), message)
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
    let value: Value = arg(ruby, args, i, name)?;
    text(ruby, value, name)
}

/// A Hash of names (String or Symbol) to values (String or Numeric), in
/// its order; also an Array of `[name, value]` pairs.
pub fn pairs(
    ruby: &Ruby,
    args: &[Value],
    i: usize,
    name: &str,
) -> Result<Vec<(String, String)>, Error> {
    let value: Value = arg(ruby, args, i, name)?;
    let pair = |k: Value, v: Value| -> Result<(String, String), Error> {
        let key = match Symbol::from_value(k) {
            Some(sym) => sym.name()?.into_owned(),
            None => text(ruby, k, name)?,
        };
        let value = if RString::from_value(v).is_none() && v.is_kind_of(ruby.class_numeric()) {
            let s: RString = v.funcall("to_s", ())?;
            text(ruby, s.as_value(), name)?
        } else {
            text_named(ruby, v, || format!("{name}[{key:?}]"))?
        };
        Ok((key, value))
    };
    if let Some(hash) = RHash::from_value(value) {
        let mut out = Vec::with_capacity(hash.len());
        hash.foreach(|k: Value, v: Value| {
            out.push(pair(k, v)?);
            Ok(magnus::r_hash::ForEach::Continue)
        })?;
        return Ok(out);
    }
    let Some(list) = RArray::from_value(value) else {
        return Err(arg_error(
            ruby,
            format!("{name} must be a Hash, got {}", class_name(value)),
        ));
    };
    (0..list.len())
        .map(|j| {
            let entry: RArray = list.entry(j as isize)?;
            if entry.len() != 2 {
                return Err(arg_error(ruby, format!("{name} must be name/value pairs")));
            }
            pair(entry.entry(0)?, entry.entry(1)?)
        })
        .collect()
}
