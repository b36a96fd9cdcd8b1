//! Reading HTTP answers with a size cap, and quoting server text safely.
//!
//! Every answer this crate reads is small: a token response or a signBlob
//! response is under 2 KiB, an error envelope a few KiB. A server that sends
//! more (a proxy's error page, a hostile endpoint, 600 MB of padding) is not
//! the API asked for, and reading it whole would cost its size in memory.

/// The most read of one answer (64 KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// Why an answer could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than [`MAX_BODY`] (declared or sent); the rest is not read.
    TooLarge,
    Transport(reqwest::Error),
}

/// The answer's body as text (invalid UTF-8 replaced), at most [`MAX_BODY`]
/// bytes of it.
pub async fn read_capped(mut resp: reqwest::Response) -> Result<String, BodyError> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `text` from a server, fit to quote in an error message: whatever looks
/// like a credential is replaced by `[redacted]` (a misconfigured proxy or
/// endpoint may echo the request's `Authorization` header), and the text is
/// cut to 500 characters.
pub fn redact(text: &str) -> String {
    const MAX: usize = 500;
    let mut out = String::with_capacity(text.len().min(MAX + 16));
    let mut after_bearer = false;
    for piece in text.split_inclusive(|c: char| !is_token_char(c)) {
        let (word, sep) = match piece.char_indices().last() {
            Some((i, c)) if !is_token_char(c) => (&piece[..i], &piece[i..]),
            _ => (piece, ""),
        };
        if !word.is_empty() && (after_bearer || looks_secret(word)) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
        out.push_str(sep);
        if !word.is_empty() {
            after_bearer = word.eq_ignore_ascii_case("bearer");
        }
        if out.chars().count() > MAX {
            let cut: String = out.chars().take(MAX).collect();
            return format!("{cut}...");
        }
    }
    out
}

/// Characters of OAuth tokens, JWTs and keys (RFC 6750 b64token, plus `/`).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '=')
}

/// Google access tokens (`ya29.`), refresh tokens (`1//`), JWTs (`eyJ`),
/// and any long run mixing upper case, lower case and digits between dots
/// or slashes (a random secret; words, emails and resource names such as
/// `projects/-/serviceAccounts/NAME` are made of shorter parts).
fn looks_secret(word: &str) -> bool {
    if word.starts_with("ya29.") || word.starts_with("1//") {
        return true;
    }
    if word.starts_with("eyJ") && word.len() >= 20 {
        return true;
    }
    word.split(['.', '/']).any(|part| {
        part.len() >= 32
            && part.bytes().any(|b| b.is_ascii_uppercase())
            && part.bytes().any(|b| b.is_ascii_lowercase())
            && part.bytes().any(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_tokens_and_keeps_the_message() {
        let text = "Request had invalid credentials: Authorization: Bearer ya29.a0AfB_byC-secret \
                    (token ya29.c.Kp8B_other, refresh 1//0gLx-refresh, jwt \
                    eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln, key \
                    AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd).";
        let out = redact(text);
        for secret in ["ya29", "secret", "Kp8B", "0gLx", "eyJ", "AbCdEf", "c2ln"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(
            out.starts_with("Request had invalid credentials: Authorization: Bearer [redacted]")
        );
        assert!(out.ends_with("key [redacted])."), "{out}");
        // Ordinary messages pass unchanged.
        for plain in [
            "Permission 'iam.serviceAccounts.signBlob' denied on resource (or it may not exist).",
            "signer@my-project-123.iam.gserviceaccount.com lacks projects/-/serviceAccounts/x",
            "Request had insufficient authentication scopes.",
            "no account projects/-/serviceAccounts/LongServiceAccountName123@x.iam.gserviceaccount.com",
        ] {
            assert_eq!(redact(plain), plain);
        }
        // A bearer token of any shape, after the word Bearer.
        assert_eq!(redact("bearer abc"), "bearer [redacted]");
        assert!(redact(&"x ".repeat(1000)).len() < 520);
    }
}
