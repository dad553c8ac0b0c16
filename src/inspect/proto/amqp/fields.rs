//! The `amqp` object of a transaction (Packetbeat's field names, every one optional) and
//! the AMQP field-table decoder that fills its `headers`, `arguments` and peer properties.
//!
//! A transaction's object is what its request said, updated with what its response said
//! (`queue.declare` gets `consumer-count` from `queue.declare-ok`), so the struct can merge
//! one into another. Field tables become JSON as Packetbeat writes them: arrays as objects
//! keyed by index, decimals and timestamps as text.

use serde_json::{Map, Number, Value};

/// Declares the object's fields (in the order Packetbeat's sorted keys show them) and the
/// merge of a response's fields into a request's.
macro_rules! amqp_fields {
    ($( $field:ident : $ty:ty => $name:literal ),* $(,)?) => {
        /// The `amqp` object of a transaction.
        #[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
        pub struct AmqpTxn {
            $(
                #[serde(rename = $name, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl AmqpTxn {
            /// Every field the other has replaces this one's.
            pub fn merge(&mut self, other: AmqpTxn) {
                $( if other.$field.is_some() { self.$field = other.$field; } )*
            }
        }
    };
}

amqp_fields! {
    active: bool => "active",
    app_id: String => "app-id",
    arguments: Map<String, Value> => "arguments",
    auto_delete: bool => "auto-delete",
    channel_max: u16 => "channel-max",
    class_id: u16 => "class-id",
    client_properties: Map<String, Value> => "client-properties",
    consumer_count: u32 => "consumer-count",
    consumer_tag: String => "consumer-tag",
    content_encoding: String => "content-encoding",
    content_type: String => "content-type",
    correlation_id: String => "correlation-id",
    delivery_mode: &'static str => "delivery-mode",
    delivery_tag: u64 => "delivery-tag",
    destination: String => "destination",
    durable: bool => "durable",
    exchange: String => "exchange",
    exchange_type: String => "exchange-type",
    exclusive: bool => "exclusive",
    expiration: String => "expiration",
    frame_max: u32 => "frame-max",
    global: bool => "global",
    headers: Map<String, Value> => "headers",
    heartbeat: u16 => "heartbeat",
    if_empty: bool => "if-empty",
    if_unused: bool => "if-unused",
    immediate: bool => "immediate",
    locale: String => "locale",
    locales: String => "locales",
    mandatory: bool => "mandatory",
    mechanism: String => "mechanism",
    mechanisms: String => "mechanisms",
    message_count: u32 => "message-count",
    message_id: String => "message-id",
    method_id: u16 => "method-id",
    multiple: bool => "multiple",
    no_ack: bool => "no-ack",
    no_local: bool => "no-local",
    no_wait: bool => "no-wait",
    passive: bool => "passive",
    prefetch_count: u16 => "prefetch-count",
    prefetch_size: u32 => "prefetch-size",
    priority: u8 => "priority",
    queue: String => "queue",
    redelivered: bool => "redelivered",
    reply_code: u16 => "reply-code",
    reply_text: String => "reply-text",
    reply_to: String => "reply-to",
    requeue: bool => "requeue",
    routing_key: String => "routing-key",
    server_properties: Map<String, Value> => "server-properties",
    source: String => "source",
    timestamp: String => "timestamp",
    r#type: String => "type",
    user_id: String => "user-id",
    version_major: u8 => "version-major",
    version_minor: u8 => "version-minor",
    virtual_host: String => "virtual-host",
}

/// A field table or array nested deeper than this is refused (bounded recursion).
const MAX_DEPTH: usize = 16;

/// Why a field table could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTable;

/// A cursor over a method's or a header's arguments; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, at: 0 }
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.at..]
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(b)
    }

    pub fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    pub fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.bytes(8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_be_bytes(a)
        })
    }

    /// A short string (length octet).
    pub fn short_str(&mut self) -> Option<String> {
        let n = usize::from(self.u8()?);
        self.bytes(n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// A long string (32-bit length).
    pub fn long_str(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        self.bytes(n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// Skips a long string without reading it (credentials).
    pub fn skip_long_str(&mut self) -> Option<()> {
        let n = self.u32()? as usize;
        self.bytes(n).map(|_| ())
    }

    /// A field table: `None` when it is empty (Packetbeat writes no field then).
    pub fn table(&mut self) -> Result<Option<Map<String, Value>>, BadTable> {
        let n = self.u32().ok_or(BadTable)? as usize;
        let body = self.bytes(n).ok_or(BadTable)?;
        if n == 0 {
            return Ok(None);
        }
        table(body, 0).map(Some)
    }
}

/// The entries of a field table's body.
fn table(body: &[u8], depth: usize) -> Result<Map<String, Value>, BadTable> {
    if depth > MAX_DEPTH {
        return Err(BadTable);
    }
    let mut r = Reader::new(body);
    let mut m = Map::new();
    while !r.rest().is_empty() {
        let name = r.short_str().ok_or(BadTable)?;
        let v = value(&mut r, depth)?;
        m.insert(name, v);
    }
    Ok(m)
}

/// The values of a field array's body, keyed by their index as Packetbeat writes them.
fn array(body: &[u8], depth: usize) -> Result<Map<String, Value>, BadTable> {
    if depth > MAX_DEPTH {
        return Err(BadTable);
    }
    let mut r = Reader::new(body);
    let mut m = Map::new();
    let mut i = 0usize;
    while !r.rest().is_empty() {
        let v = value(&mut r, depth)?;
        m.insert(i.to_string(), v);
        i += 1;
    }
    Ok(m)
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// One typed value (its type octet first).
fn value(r: &mut Reader<'_>, depth: usize) -> Result<Value, BadTable> {
    let bad = || BadTable;
    let t = r.u8().ok_or(BadTable)?;
    Ok(match t {
        b't' => Value::Bool(r.u8().ok_or(BadTable)? != 0),
        b'b' => Value::from(r.u8().ok_or(BadTable)? as i8),
        b'B' => Value::from(r.u8().ok_or(BadTable)?),
        b'U' => Value::from(r.u16().ok_or(BadTable)? as i16),
        b'u' => Value::from(r.u16().ok_or(BadTable)?),
        b'I' => Value::from(r.u32().ok_or(BadTable)? as i32),
        b'i' => Value::from(r.u32().ok_or(BadTable)?),
        b'L' => Value::from(r.u64().ok_or(BadTable)? as i64),
        b'l' => Value::from(r.u64().ok_or(BadTable)?),
        b'f' => float(f64::from(f32::from_bits(r.u32().ok_or(BadTable)?))),
        b'd' => float(f64::from_bits(r.u64().ok_or(BadTable)?)),
        b'D' => {
            let scale = usize::from(r.u8().ok_or(BadTable)?);
            Value::String(decimal(scale, r.u32().ok_or(BadTable)?))
        }
        b's' => Value::String(r.short_str().ok_or_else(bad)?),
        b'S' => Value::String(r.long_str().ok_or_else(bad)?),
        b'A' => {
            let n = r.u32().ok_or(BadTable)? as usize;
            Value::Object(array(r.bytes(n).ok_or(BadTable)?, depth + 1)?)
        }
        b'T' => Value::String(timestamp(r.u64().ok_or(BadTable)?)),
        b'F' => {
            let n = r.u32().ok_or(BadTable)? as usize;
            Value::Object(table(r.bytes(n).ok_or(BadTable)?, depth + 1)?)
        }
        b'V' => Value::Null,
        b'x' => {
            let n = r.u32().ok_or(BadTable)? as usize;
            Value::String(byte_list(r.bytes(n).ok_or(BadTable)?))
        }
        _ => return Err(BadTable),
    })
}

/// A decimal value as text: the digits with a point `scale` places from the right.
fn decimal(scale: usize, v: u32) -> String {
    let digits = v.to_string();
    if scale == 0 || scale > digits.len() {
        return digits;
    }
    let (a, b) = digits.split_at(digits.len() - scale);
    format!("{a}.{b}")
}

/// Bytes as Packetbeat lists them: `[1, 2, 3]`.
fn byte_list(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 4);
    s.push('[');
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

/// A message body that is not text, as Packetbeat writes it: its bytes in decimal,
/// separated by spaces.
pub fn body_numbers(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 4);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&x.to_string());
    }
    s
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// An AMQP timestamp (seconds since the epoch) in Packetbeat's layout, UTC:
/// `January  2 15:04:05 2006` (the day padded with a space).
pub fn timestamp(secs: u64) -> String {
    // Beyond year 9999 the layout has no meaning; keep the number.
    if secs > 253_402_300_799 {
        return secs.to_string();
    }
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{} {:>2} {:02}:{:02}:{:02} {}",
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        y
    )
}

/// Year, month (1-12), day of a count of days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(name: &str, t: u8, v: &[u8]) -> Vec<u8> {
        let mut e = vec![name.len() as u8];
        e.extend_from_slice(name.as_bytes());
        e.push(t);
        e.extend_from_slice(v);
        e
    }

    fn wrap(body: &[u8]) -> Vec<u8> {
        let mut t = (body.len() as u32).to_be_bytes().to_vec();
        t.extend_from_slice(body);
        t
    }

    #[test]
    fn field_table_values_are_written_as_packetbeat_writes_them() {
        let mut body = Vec::new();
        body.extend(entry("b", b't', &[1]));
        body.extend(entry("i8", b'b', &[0xff]));
        body.extend(entry("i32", b'I', &(-5i32).to_be_bytes()));
        body.extend(entry("u64", b'l', &7u64.to_be_bytes()));
        body.extend(entry("s", b'S', &[0, 0, 0, 2, b'h', b'i']));
        body.extend(entry("dec", b'D', &[2, 0, 0, 0x30, 0x39]));
        body.extend(entry("ts", b'T', &1_700_000_000u64.to_be_bytes()));
        body.extend(entry("x", b'x', &[0, 0, 0, 2, 1, 2]));
        body.extend(entry("v", b'V', &[]));
        body.extend(entry("d", b'd', &1.5f64.to_bits().to_be_bytes()));
        let arr = [b'S', 0, 0, 0, 1, b'a', b'B', 9];
        let mut a = (arr.len() as u32).to_be_bytes().to_vec();
        a.extend_from_slice(&arr);
        body.extend(entry("arr", b'A', &a));
        let inner = entry("k", b'S', &[0, 0, 0, 1, b'v']);
        let mut f = (inner.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&inner);
        body.extend(entry("nested", b'F', &f));
        let t = Reader::new(&wrap(&body)).table().unwrap().unwrap();
        assert_eq!(
            Value::Object(t),
            json!({
                "b": true, "i8": -1, "i32": -5, "u64": 7, "s": "hi", "dec": "123.45",
                "ts": "November 14 22:13:20 2023", "x": "[1, 2]", "v": null, "d": 1.5,
                "arr": {"0": "a", "1": 9}, "nested": {"k": "v"}
            })
        );
    }

    #[test]
    fn an_empty_table_is_no_field_and_a_bad_one_is_refused() {
        assert_eq!(Reader::new(&[0, 0, 0, 0]).table(), Ok(None));
        assert_eq!(Reader::new(&[0, 0, 0, 9, 1]).table(), Err(BadTable));
        let bad = entry("k", b'?', &[1]);
        assert_eq!(Reader::new(&wrap(&bad)).table(), Err(BadTable));
        // Tables nested deeper than the bound are refused, not recursed into.
        let mut t = entry("k", b'V', &[]);
        for _ in 0..40 {
            let mut f = (t.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&t);
            t = entry("k", b'F', &f);
        }
        assert_eq!(Reader::new(&wrap(&t)).table(), Err(BadTable));
    }

    #[test]
    fn timestamps_use_packetbeat_layout_in_utc() {
        assert_eq!(timestamp(0), "January  1 00:00:00 1970");
        assert_eq!(timestamp(951_782_400), "February 29 00:00:00 2000");
        assert_eq!(timestamp(u64::MAX), u64::MAX.to_string());
    }

    #[test]
    fn merge_keeps_the_request_and_takes_the_response() {
        let mut a = AmqpTxn {
            queue: Some("q".into()),
            durable: Some(true),
            ..Default::default()
        };
        a.merge(AmqpTxn {
            queue: Some("q2".into()),
            consumer_count: Some(3),
            ..Default::default()
        });
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"consumer-count": 3, "durable": true, "queue": "q2"})
        );
    }
}
