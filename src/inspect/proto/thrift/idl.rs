//! What `idl_files` tell: for each method, its service and the names of its parameters
//! and exceptions by field id, read from Thrift IDL files.
//!
//! Only service definitions matter here, so this is a small tokenizer and a reader of
//! `service NAME [extends X] { functions }`; every other definition (structs, enums,
//! constants, typedefs, includes) is skipped by balancing brackets. Written by hand: the
//! IDL parsers on crates.io build whole code-generation trees for a few names.

use std::collections::HashMap;

/// A method of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Method {
    pub service: String,
    pub params: HashMap<i16, String>,
    pub exceptions: HashMap<i16, String>,
}

/// Methods by name, from every file given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Idl {
    pub methods: HashMap<String, Method>,
}

impl Idl {
    /// Reads the files; an error names the file and what was wrong.
    pub fn read(paths: &[String]) -> Result<Idl, String> {
        let mut idl = Idl::default();
        for p in paths {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"))?;
            idl.add(&text).map_err(|e| format!("{p}: {e}"))?;
        }
        Ok(idl)
    }

    /// Adds the services of one file's text.
    pub fn add(&mut self, text: &str) -> Result<(), String> {
        let toks = tokens(text)?;
        let mut i = 0;
        let mut depth = 0usize;
        while i < toks.len() {
            match toks[i].as_str() {
                "service" if depth == 0 => i = self.service(&toks, i + 1)?,
                "{" | "(" | "[" => {
                    depth += 1;
                    i += 1;
                }
                "}" | ")" | "]" => {
                    depth = depth.saturating_sub(1);
                    i += 1;
                }
                _ => i += 1,
            }
        }
        Ok(())
    }

    fn service(&mut self, t: &[String], mut i: usize) -> Result<usize, String> {
        let name = t.get(i).ok_or("service without a name")?.clone();
        i += 1;
        if t.get(i).map(String::as_str) == Some("extends") {
            i += 2;
        }
        if t.get(i).map(String::as_str) != Some("{") {
            return Err(format!("service {name}: expected {{"));
        }
        i += 1;
        loop {
            match t.get(i).map(String::as_str) {
                None => return Err(format!("service {name}: no closing }}")),
                Some("}") => return Ok(i + 1),
                Some("," | ";") => i += 1,
                Some("(") => i = skip_balanced(t, i), // annotations
                Some(_) => i = self.function(t, i, &name)?,
            }
        }
    }

    fn function(&mut self, t: &[String], mut i: usize, service: &str) -> Result<usize, String> {
        if t.get(i).map(String::as_str) == Some("oneway") {
            i += 1;
        }
        i = skip_type(t, i);
        let name = t
            .get(i)
            .cloned()
            .ok_or_else(|| format!("service {service}: function without a name"))?;
        i += 1;
        if t.get(i).map(String::as_str) != Some("(") {
            return Err(format!("{service}.{name}: expected ("));
        }
        let (params, next) = fields(t, i + 1)?;
        i = next;
        let mut exceptions = HashMap::new();
        if t.get(i).map(String::as_str) == Some("throws") {
            if t.get(i + 1).map(String::as_str) != Some("(") {
                return Err(format!("{service}.{name}: expected ( after throws"));
            }
            let (e, next) = fields(t, i + 2)?;
            exceptions = e;
            i = next;
        }
        self.methods.entry(name).or_insert(Method {
            service: service.to_string(),
            params,
            exceptions,
        });
        Ok(i)
    }
}

/// Reads a field list after its `(`: field ids (explicit, or implicit from -1 down) to
/// names; returns the index after the `)`.
fn fields(t: &[String], mut i: usize) -> Result<(HashMap<i16, String>, usize), String> {
    let mut out = HashMap::new();
    let mut implicit = 0i16;
    loop {
        match t.get(i).map(String::as_str) {
            None => return Err("unclosed field list".into()),
            Some(")") => return Ok((out, i + 1)),
            Some("," | ";") => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let id = match (t.get(i), t.get(i + 1).map(String::as_str)) {
            (Some(n), Some(":")) => {
                i += 2;
                parse_int(n).ok_or_else(|| format!("bad field id {n}"))?
            }
            _ => {
                implicit -= 1;
                implicit
            }
        };
        if matches!(t.get(i).map(String::as_str), Some("required" | "optional")) {
            i += 1;
        }
        i = skip_type(t, i);
        let name = t.get(i).cloned().ok_or("field without a name")?;
        i += 1;
        if t.get(i).map(String::as_str) == Some("=") {
            i += 1;
            i = match t.get(i).map(String::as_str) {
                Some("{" | "[") => skip_balanced(t, i),
                _ => i + 1,
            };
        }
        if t.get(i).map(String::as_str) == Some("(") {
            i = skip_balanced(t, i);
        }
        out.insert(id, name);
    }
}

fn parse_int(s: &str) -> Option<i16> {
    match s.strip_prefix("0x") {
        Some(h) => i16::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Skips a type (`i32`, `list<map<string, X>>`, with annotations); the index after it.
fn skip_type(t: &[String], mut i: usize) -> usize {
    i += 1;
    if t.get(i).map(String::as_str) == Some("<") {
        let mut depth = 0;
        while let Some(tok) = t.get(i) {
            i += 1;
            match tok.as_str() {
                "<" => depth += 1,
                ">" => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    if t.get(i).map(String::as_str) == Some("(") {
        i = skip_balanced(t, i);
    }
    i
}

/// From an opening bracket, the index after its matching close.
fn skip_balanced(t: &[String], mut i: usize) -> usize {
    let mut depth = 0usize;
    while let Some(tok) = t.get(i) {
        i += 1;
        match tok.as_str() {
            "(" | "{" | "[" => depth += 1,
            ")" | "}" | "]" => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    i
}

/// Words, numbers, string literals and punctuation; comments dropped.
fn tokens(s: &str) -> Result<Vec<String>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'#' => i = memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |n| i + n),
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |n| i + n)
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = memchr::memmem::find(&b[i + 2..], b"*/")
                    .map(|n| i + 2 + n + 2)
                    .ok_or("unclosed comment")?
            }
            b'"' | b'\'' => {
                let end = memchr::memchr(c, &b[i + 1..]).ok_or("unclosed string literal")?;
                out.push(s[i..i + 2 + end].to_string());
                i += 2 + end;
            }
            b'{' | b'}' | b'(' | b')' | b'<' | b'>' | b'[' | b']' | b',' | b';' | b':' | b'='
            | b'*' => {
                out.push((c as char).to_string());
                i += 1;
            }
            _ => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'.' | b'-' | b'+'))
                {
                    i += 1;
                }
                if i == start {
                    // Any other character stands alone (non-ASCII text outside strings).
                    let ch = s[i..].chars().next().map_or(1, char::len_utf8);
                    out.push(s[i..i + ch].to_string());
                    i += ch;
                } else {
                    out.push(s[start..i].to_string());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_functions_params_and_exceptions() {
        let mut idl = Idl::default();
        idl.add(
            r#"
            include "shared.thrift"
            namespace py tutorial
            /* a comment with service { inside */
            const map<string,string> MAPCONSTANT = {'hello':'world', 'goodnight':'moon'}
            enum Operation { ADD = 1, SUBTRACT = 2 }
            struct Work { 1: i32 num1 = 0, 2: i32 num2, 3: Operation op, 4: optional string comment }
            exception InvalidOperation { 1: i32 whatOp, 2: string why }
            service Calculator extends shared.SharedService {
               void ping(),
               i32 add(1:i32 num1, 2:i32 num2), # trailing comment
               i32 calculate(1:i32 logid, 2:Work w) throws (1:InvalidOperation ouch),
               map<string, list<i32>> m(1: required map<i32, string> a (x = "y"), 2: list<i32> b = [1, 2]);
               oneway void zip()
            }
            "#,
        )
        .unwrap();
        let calc = &idl.methods["calculate"];
        assert_eq!(calc.service, "Calculator");
        assert_eq!(calc.params[&2], "w");
        assert_eq!(calc.exceptions[&1], "ouch");
        assert_eq!(idl.methods["add"].params[&1], "num1");
        assert_eq!(idl.methods["m"].params[&2], "b");
        assert!(idl.methods["zip"].params.is_empty());
        assert_eq!(idl.methods.len(), 5);
        assert!(Idl::default().add("service X { void f(").is_err());
    }
}
