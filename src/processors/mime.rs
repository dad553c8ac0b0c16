//! `detect_mime_type`: the media type of a field's content, from its first bytes.
//!
//! Signatures of the WHATWG "MIME sniffing" standard (the ones Go's
//! `http.DetectContentType`, which Beats falls back on, knows), plus JSON; text that is
//! valid UTF-8 without control bytes is `text/plain`, anything else
//! `application/octet-stream`.

/// The media type of `data`.
pub fn detect(data: &[u8]) -> &'static str {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"%PDF-", "application/pdf"),
        (b"%!PS-Adobe-", "application/postscript"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xFF\xD8\xFF", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"BM", "image/bmp"),
        (b"\x00\x00\x01\x00", "image/x-icon"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1F\x8B\x08", "application/x-gzip"),
        (b"Rar!\x1A\x07", "application/x-rar-compressed"),
        (b"\x00asm", "application/wasm"),
        (b"OggS\x00", "application/ogg"),
        (b"ID3", "audio/mpeg"),
        (b"wOFF", "font/woff"),
        (b"wOF2", "font/woff2"),
    ];
    if let Some((_, t)) = MAGIC.iter().find(|(m, _)| data.starts_with(m)) {
        return t;
    }
    if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        return "image/webp";
    }
    let text = data.trim_ascii_start();
    const HTML: [&[u8]; 17] = [
        b"<!DOCTYPE HTML",
        b"<HTML",
        b"<HEAD",
        b"<SCRIPT",
        b"<IFRAME",
        b"<H1",
        b"<DIV",
        b"<FONT",
        b"<TABLE",
        b"<A",
        b"<STYLE",
        b"<TITLE",
        b"<B",
        b"<BODY",
        b"<BR",
        b"<P",
        b"<!--",
    ];
    for tag in HTML {
        if text.len() > tag.len()
            && text[..tag.len()].eq_ignore_ascii_case(tag)
            && matches!(text[tag.len()], b' ' | b'>')
        {
            return "text/html; charset=utf-8";
        }
    }
    if text.starts_with(b"<?xml") {
        return "text/xml; charset=utf-8";
    }
    if matches!(text.first(), Some(b'{' | b'['))
        && serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok()
    {
        return "application/json";
    }
    let binary = data
        .iter()
        .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b));
    if !binary && std::str::from_utf8(data).is_ok() {
        return "text/plain; charset=utf-8";
    }
    "application/octet-stream"
}

#[cfg(test)]
mod tests {
    use super::detect;

    #[test]
    fn common_types() {
        assert_eq!(detect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(detect(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(
            detect(b"  <!doctype html><html>"),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            detect(b"<?xml version=\"1.0\"?><a/>"),
            "text/xml; charset=utf-8"
        );
        assert_eq!(detect(br#"{"a": [1, 2]}"#), "application/json");
        assert_eq!(detect(b"{not json"), "text/plain; charset=utf-8");
        assert_eq!(detect("héllo\n".as_bytes()), "text/plain; charset=utf-8");
        assert_eq!(detect(b"\x1F\x8B\x08\0"), "application/x-gzip");
        assert_eq!(detect(b"\x00\x01\x02\x03"), "application/octet-stream");
    }
}
