//! Where the events come from, as lines: the file output's files (rotated ones included,
//! gzip allowed) and standard input. (The Kafka topic is [`super::kafka`].)
//!
//! A file is read up to the size it had when its reading began, so a file an agent keeps
//! writing still ends. A line longer than [`MAX_LINE`] is dropped (and counted by the
//! caller as malformed) rather than held in memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// The longest line kept; the file output never writes one this long.
pub const MAX_LINE: usize = 16 << 20;

/// One line of input, or the sign of one that was too long.
pub enum Line<'a> {
    Text(&'a [u8]),
    TooLong,
}

/// The files to read for these arguments, oldest first: an argument that names the file
/// output's current file (`connbeat`) brings its rotated files (`connbeat.1` … `connbeat.N`,
/// also `connbeat.N.gz`) before it, the highest number (the oldest) first.
pub fn with_rotated(args: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for a in args {
        let name = a.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let dir = match a.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
        if !name.is_empty()
            && let Ok(entries) = std::fs::read_dir(&dir)
        {
            for e in entries.flatten() {
                let f = e.file_name();
                let Some(f) = f.to_str() else { continue };
                let Some(rest) = f.strip_prefix(name).and_then(|r| r.strip_prefix('.')) else {
                    continue;
                };
                let num = rest.strip_suffix(".gz").unwrap_or(rest);
                if let Ok(n) = num.parse::<u64>() {
                    rotated.push((n, e.path()));
                }
            }
        }
        rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
        out.extend(rotated.into_iter().map(|(_, p)| p));
        if a.exists() || out.is_empty() {
            out.push(a.clone());
        }
    }
    Ok(out)
}

/// Reads one file (gzip or plain) to the end it had when opened.
pub fn read_file(path: &Path, sink: &mut dyn FnMut(Line)) -> io::Result<()> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    let head = io::Cursor::new(magic[..n].to_vec());
    let body = head.chain(f).take(len);
    if n == 2 && magic == [0x1f, 0x8b] {
        for_each_line(
            BufReader::with_capacity(256 << 10, flate2::read::MultiGzDecoder::new(body)),
            sink,
        )
    } else {
        for_each_line(BufReader::with_capacity(256 << 10, body), sink)
    }
}

/// Calls `sink` for every line of `r` (without its newline; a last line without one
/// too), never holding more than [`MAX_LINE`] bytes of one.
pub fn for_each_line(mut r: impl BufRead, sink: &mut dyn FnMut(Line)) -> io::Result<()> {
    let mut partial: Vec<u8> = Vec::new();
    let mut too_long = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if too_long {
                sink(Line::TooLong);
            } else if !partial.is_empty() {
                sink(Line::Text(&partial));
            }
            return Ok(());
        }
        let mut consumed = 0;
        let mut rest = buf;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let line = &rest[..i];
            if too_long || partial.len() + line.len() > MAX_LINE {
                sink(Line::TooLong);
            } else if partial.is_empty() {
                sink(Line::Text(line));
            } else {
                partial.extend_from_slice(line);
                sink(Line::Text(&partial));
            }
            partial.clear();
            too_long = false;
            consumed += i + 1;
            rest = &rest[i + 1..];
        }
        if !rest.is_empty() {
            if too_long || partial.len() + rest.len() > MAX_LINE {
                too_long = true;
                partial = Vec::new();
            } else {
                partial.extend_from_slice(rest);
            }
            consumed += rest.len();
        }
        r.consume(consumed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(data: &[u8]) -> Vec<Option<String>> {
        let mut v = Vec::new();
        for_each_line(io::BufReader::with_capacity(4, data), &mut |l| {
            v.push(match l {
                Line::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                Line::TooLong => None,
            })
        })
        .unwrap();
        v
    }

    #[test]
    fn lines_across_buffer_boundaries_and_a_last_line_without_newline() {
        assert_eq!(
            lines(b"hello world\n\nabc\nlast"),
            vec![
                Some("hello world".into()),
                Some("".into()),
                Some("abc".into()),
                Some("last".into())
            ]
        );
    }

    #[test]
    fn rotated_and_gzip_files_are_read_oldest_first() {
        let dir = std::env::temp_dir().join(format!("connbeat-topo-input-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("connbeat"), b"current\n").unwrap();
        std::fs::write(dir.join("connbeat.1"), b"newer\n").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"oldest\n").unwrap();
        std::fs::write(dir.join("connbeat.2.gz"), gz.finish().unwrap()).unwrap();
        std::fs::write(dir.join("connbeat.x"), b"not rotated\n").unwrap();
        std::fs::write(dir.join("other.1"), b"not ours\n").unwrap();
        let files = with_rotated(&[dir.join("connbeat")]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["connbeat.2.gz", "connbeat.1", "connbeat"]);
        let mut got = Vec::new();
        for f in &files {
            read_file(f, &mut |l| {
                if let Line::Text(t) = l {
                    got.push(String::from_utf8_lossy(t).into_owned());
                }
            })
            .unwrap();
        }
        assert_eq!(got, ["oldest", "newer", "current"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
