//! The byte-level encodings the two URL formats need. Each one is a fixed
//! "keep" set; every other byte of the UTF-8 input becomes `%XX`.
//!
//! The sets differ in small ways that matter for byte-identical output:
//!
//! | function          | keeps                          | space | used for |
//! |-------------------|--------------------------------|-------|----------|
//! | [`rfc3986`]       | `A-Za-z0-9-._~`                | `%20` | V4 query keys/values, header names |
//! | [`rfc3986_path`]  | `A-Za-z0-9-._~` and `/`        | `%20` | V4 paths |
//! | [`fog115_path`]   | `A-Za-z0-9_.-~` and `/`        | `%20` | V2 path (fog-google 1.15 `host_path_query`) |
//! | [`addressable_path`] | `A-Za-z0-9-._~!$&'()*+,;=:@/` | `%20` | V2 path (fog-google >= 1.21, Addressable) |
//! | [`fog_escape`]    | `A-Za-z0-9_.-` (not `~`)       | `%20` | V2 query values (`Fog::Google.escape`) |
//! | [`cgi_escape`]    | `A-Za-z0-9_.-~`                | `+`   | V2 `Signature` (Ruby 3.1 `CGI.escape`) |
//!
//! All of them write upper-case hex, as Google's V4 spec and Ruby's
//! `unpack("H2").upcase` / `CGI.escape` do (field notes s.4).

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn encode(input: &str, keep: impl Fn(u8) -> bool, space_as_plus: bool) -> String {
    let mut out = String::with_capacity(input.len() + input.len() / 2);
    for &b in input.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else if space_as_plus && b == b' ' {
            out.push('+');
        } else {
            out.push('%');
            out.push(HEX_UPPER[usize::from(b >> 4)] as char);
            out.push(HEX_UPPER[usize::from(b & 0xf)] as char);
        }
    }
    out
}

/// V4 (RFC 3986) encoding: every byte but `A-Za-z0-9-._~` as `%XX`.
pub fn rfc3986(s: &str) -> String {
    encode(s, is_unreserved, false)
}

/// [`rfc3986`] that keeps `/`, for V4 resource paths (the "Slashes in object
/// name should not be URL encoded" conformance vector).
pub fn rfc3986_path(s: &str) -> String {
    encode(s, |b| is_unreserved(b) || b == b'/', false)
}

/// fog-google 1.15's path escaping in `Utils#host_path_query`:
/// `path.b.gsub(/([^a-zA-Z0-9_.\-~]+)/) { %XX per byte, upcase }.gsub("%2F", "/")`.
///
/// Because every `%` of the input is itself escaped, the only `%2F` left
/// after the first step comes from a `/`, so the `gsub("%2F", "/")` is the
/// same as keeping `/`. The result therefore equals [`rfc3986_path`]; it is a
/// separate function because V2 must follow fog-google, not RFC 3986, and
/// later fog-google versions encode differently (field notes s.4).
pub fn fog115_path(s: &str) -> String {
    encode(s, |b| is_unreserved(b) || b == b'/', false)
}

/// `Addressable::URI.encode_component(s, CharacterClasses::PATH)`, which
/// fog-google 1.21 and later use for the V2 path: RFC 3986 `pchar` and `/`
/// (unreserved, sub-delims, `:` and `@`) kept, every other UTF-8 byte
/// (`%` too) as upper-case `%XX`.
pub fn addressable_path(s: &str) -> String {
    encode(
        s,
        |b| is_unreserved(b) || b"!$&'()*+,;=:@/".contains(&b),
        false,
    )
}

/// `Fog::Google.escape(str)` (fog-google 1.15 `lib/fog/google.rb`): keeps
/// `a-zA-Z0-9_.-` only, so `~` becomes `%7E`. fog uses it for V2 query values.
pub fn fog_escape(s: &str) -> String {
    encode(
        s,
        |b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'),
        false,
    )
}

/// Ruby 3.1 `CGI.escape`: keeps `-.0-9A-Z_a-z~` (not `*`), space as `+`
/// (checked with `ruby -rcgi` over all 256 bytes). fog escapes the V2
/// `Signature` with it.
pub fn cgi_escape(s: &str) -> String {
    encode(s, is_unreserved, true)
}

/// Lower-case hex, as V4 wants for the signature and the canonical-request hash.
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX_LOWER[usize::from(b >> 4)] as char);
        out.push(HEX_LOWER[usize::from(b & 0xf)] as char);
    }
    out
}

/// Ruby's `Base64.encode64(bytes).chomp`: standard alphabet with padding and
/// a `\n` after every 60 characters (RFC 2045 lines), without the final one.
/// fog-google's V2 `Signature` is exactly this, so a 256-byte RSA signature
/// carries five inner line breaks that end up as `%0A` in the URL.
pub fn ruby_encode64_chomp(bytes: &[u8]) -> String {
    use base64::Engine as _;
    let flat = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(flat.len() + flat.len() / 60);
    for (i, chunk) in flat.as_bytes().chunks(60).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // The base64 alphabet is ASCII, so any byte split is a char split.
        out.push_str(std::str::from_utf8(chunk).expect("base64 output is ASCII"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(f: fn(&str) -> String) -> String {
        (0u8..=127)
            .map(|b| (b as char).to_string())
            .filter(|c| f(c) == *c)
            .collect()
    }

    const ALNUM: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    #[test]
    fn keep_sets_are_exactly_the_documented_ones() {
        let sorted = |extra: &str| {
            let mut v: Vec<char> = format!("{ALNUM}{extra}").chars().collect();
            v.sort();
            v.into_iter().collect::<String>()
        };
        assert_eq!(kept(rfc3986), sorted("-._~"));
        assert_eq!(kept(rfc3986_path), sorted("-._~/"));
        assert_eq!(kept(fog115_path), sorted("-._~/"));
        assert_eq!(kept(fog_escape), sorted("-._"));
        // Ruby 3.1: ruby -rcgi -e 'p (0..255).map(&:chr).select { |c| CGI.escape(c) == c }.join'
        assert_eq!(kept(cgi_escape), sorted("-._~"));
    }

    #[test]
    fn reserved_and_special_characters() {
        assert_eq!(
            rfc3986("a b+c&d?e#f%g=h/i"),
            "a%20b%2Bc%26d%3Fe%23f%25g%3Dh%2Fi"
        );
        assert_eq!(
            rfc3986_path("/a b+c&d?e#f%g=h//i"),
            "/a%20b%2Bc%26d%3Fe%23f%25g%3Dh//i"
        );
        // field notes s.4: fog-google 1.15 turns `a b+c.png` into `a%20b%2Bc.png`.
        assert_eq!(fog115_path("b/a b+c.png"), "b/a%20b%2Bc.png");
        assert_eq!(fog115_path("b//x/"), "b//x/");
        // A literal "%2F" in a name must not turn into a slash.
        assert_eq!(fog115_path("a%2Fb"), "a%252Fb");
        assert_eq!(fog_escape("a~b c/d"), "a%7Eb%20c%2Fd");
        assert_eq!(cgi_escape("a b~+/=\n"), "a+b~%2B%2F%3D%0A");
    }

    #[test]
    fn unicode_is_encoded_per_utf8_byte_upper_case() {
        assert_eq!(rfc3986("é"), "%C3%A9");
        assert_eq!(rfc3986_path("日/😀"), "%E6%97%A5/%F0%9F%98%80");
        assert_eq!(fog_escape("é"), "%C3%A9");
        assert_eq!(cgi_escape("é "), "%C3%A9+");
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex_lower(&[0x00, 0xab, 0xff, 0x10]), "00abff10");
        assert_eq!(hex_lower(&[]), "");
    }

    #[test]
    fn ruby_base64_breaks_lines_every_60_characters() {
        assert_eq!(ruby_encode64_chomp(b""), "");
        assert_eq!(ruby_encode64_chomp(b"hi"), "aGk=");
        // 45 input bytes are exactly one 60-character line: no break at all.
        let line = ruby_encode64_chomp(&[0u8; 45]);
        assert_eq!(line, "A".repeat(60));
        let two = ruby_encode64_chomp(&[0u8; 46]);
        assert_eq!(two, format!("{}\nAA==", "A".repeat(60)));
        // A 2048-bit signature: 344 characters, five inner breaks.
        let sig = ruby_encode64_chomp(&[0xffu8; 256]);
        assert_eq!(sig.matches('\n').count(), 5);
        assert!(sig.split('\n').all(|l| l.len() <= 60));
    }
}
