//! AMQP 0-9-1 wire format, pure: frame headers, method frames (connection, channel,
//! exchange, queue, basic and tx classes, with the arguments Packetbeat reports) and
//! content headers (message properties). Bytes in, typed values out; nothing is kept.
//!
//! A frame is `type:u8 channel:u16 size:u32 payload[size] 0xCE`. The client starts a
//! connection with the 8-byte protocol header `AMQP 0 0 9 1`.

use super::fields::{AmqpTxn, Reader};
use crate::inspect::proto::ParseError;

/// Octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// Bytes of a frame header.
pub const HEAD: usize = 7;
/// Bytes of the protocol header a client sends first.
pub const PROTOCOL_HEADER: usize = 8;

pub const METHOD: u8 = 1;
pub const HEADER: u8 = 2;
pub const BODY: u8 = 3;
pub const HEARTBEAT: u8 = 8;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub kind: u8,
    pub channel: u16,
    pub size: u32,
}

/// The frame header at the start of `data`, when 7 bytes are there.
pub fn frame_head(data: &[u8]) -> Option<FrameHead> {
    let h = data.get(..HEAD)?;
    Some(FrameHead {
        kind: h[0],
        channel: u16::from_be_bytes([h[1], h[2]]),
        size: u32::from_be_bytes([h[3], h[4], h[5], h[6]]),
    })
}

/// Whether `data` starts with the protocol header (`Some(false)`: it does not; `None`:
/// too short to say).
pub fn is_protocol_header(data: &[u8]) -> Option<bool> {
    let n = data.len().min(5);
    if data[..n] != b"AMQP\0"[..n] {
        return Some(false);
    }
    (data.len() >= PROTOCOL_HEADER).then_some(true)
}

/// What a method is to a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Waits for its `-ok` on the same channel (unless `no-wait`).
    Request,
    /// Answers the request waiting on its channel.
    Response,
    /// Complete by itself (acknowledgements).
    Async,
    /// Carries a message: a content header and body frames follow.
    Content,
}

/// The name of a method, its role, and whether `hide_connection_information` hides it.
fn describe(class: u16, id: u16) -> Option<(&'static str, Role, bool)> {
    use Role::*;
    Some(match (class, id) {
        (10, 10) => ("connection.start", Request, true),
        (10, 11) => ("connection.start-ok", Response, true),
        (10, 30) => ("connection.tune", Request, true),
        (10, 31) => ("connection.tune-ok", Response, true),
        (10, 40) => ("connection.open", Request, true),
        (10, 41) => ("connection.open-ok", Response, true),
        (10, 50) => ("connection.close", Request, false),
        (10, 51) => ("connection.close-ok", Response, false),
        (20, 10) => ("channel.open", Request, true),
        (20, 11) => ("channel.open-ok", Response, true),
        (20, 20) => ("channel.flow", Request, true),
        (20, 21) => ("channel.flow-ok", Response, true),
        (20, 40) => ("channel.close", Request, false),
        (20, 41) => ("channel.close-ok", Response, false),
        (40, 10) => ("exchange.declare", Request, false),
        (40, 11) => ("exchange.declare-ok", Response, false),
        (40, 20) => ("exchange.delete", Request, false),
        (40, 21) => ("exchange.delete-ok", Response, false),
        (40, 30) => ("exchange.bind", Request, false),
        (40, 31) => ("exchange.bind-ok", Response, false),
        (40, 40) => ("exchange.unbind", Request, false),
        (40, 51) => ("exchange.unbind-ok", Response, false),
        (50, 10) => ("queue.declare", Request, false),
        (50, 11) => ("queue.declare-ok", Response, false),
        (50, 20) => ("queue.bind", Request, false),
        (50, 21) => ("queue.bind-ok", Response, false),
        (50, 30) => ("queue.purge", Request, false),
        (50, 31) => ("queue.purge-ok", Response, false),
        (50, 40) => ("queue.delete", Request, false),
        (50, 41) => ("queue.delete-ok", Response, false),
        (50, 50) => ("queue.unbind", Request, false),
        (50, 51) => ("queue.unbind-ok", Response, false),
        (60, 10) => ("basic.qos", Request, true),
        (60, 11) => ("basic.qos-ok", Response, true),
        (60, 20) => ("basic.consume", Request, false),
        (60, 21) => ("basic.consume-ok", Response, false),
        (60, 30) => ("basic.cancel", Request, false),
        (60, 31) => ("basic.cancel-ok", Response, false),
        (60, 40) => ("basic.publish", Content, false),
        (60, 50) => ("basic.return", Content, false),
        (60, 60) => ("basic.deliver", Content, false),
        (60, 70) => ("basic.get", Request, false),
        (60, 71) => ("basic.get-ok", Content, false),
        (60, 72) => ("basic.get-empty", Response, false),
        (60, 80) => ("basic.ack", Async, false),
        (60, 90) => ("basic.reject", Async, false),
        (60, 110) => ("basic.recover", Request, false),
        (60, 111) => ("basic.recover-ok", Response, false),
        (60, 120) => ("basic.nack", Async, false),
        (90, 10) => ("tx.select", Request, false),
        (90, 11) => ("tx.select-ok", Response, false),
        (90, 20) => ("tx.commit", Request, false),
        (90, 21) => ("tx.commit-ok", Response, false),
        (90, 30) => ("tx.rollback", Request, false),
        (90, 31) => ("tx.rollback-ok", Response, false),
        _ => return None,
    })
}

/// Whether a method frame's class and method ids name a method known here.
pub fn known(class: u16, id: u16) -> bool {
    describe(class, id).is_some()
}

/// A decoded method frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Method {
    pub class: u16,
    pub id: u16,
    /// `queue.declare`, ...
    pub name: &'static str,
    pub role: Role,
    /// Connection setup that `hide_connection_information` keeps out of events.
    pub connection_info: bool,
    pub fields: AmqpTxn,
    /// What Packetbeat's `request` text names after the method (the queue, ...).
    pub arg: Option<String>,
    /// Its arguments table could not be read (the method is kept without it).
    pub bad_arguments: bool,
}

/// The bits of a method's flag octet, lowest first.
fn bits(b: u8) -> [bool; 5] {
    [b & 1 != 0, b & 2 != 0, b & 4 != 0, b & 8 != 0, b & 16 != 0]
}

const MALFORMED: ParseError = ParseError("AMQP method arguments shorter than the method needs");

/// Decodes a method frame's payload. `Ok(None)`: a method not known here (skipped).
/// `parse_arguments`: read the optional arguments tables.
pub fn method(payload: &[u8], parse_arguments: bool) -> Result<Option<Method>, ParseError> {
    let mut r = Reader::new(payload);
    let (Some(class), Some(id)) = (r.u16(), r.u16()) else {
        return Err(MALFORMED);
    };
    let Some((name, role, connection_info)) = describe(class, id) else {
        return Ok(None);
    };
    let mut m = Method {
        class,
        id,
        name,
        role,
        connection_info,
        fields: AmqpTxn::default(),
        arg: None,
        bad_arguments: false,
    };
    arguments(&mut m, &mut r, parse_arguments).ok_or(MALFORMED)?;
    Ok(Some(m))
}

/// Reads a method's arguments into its fields.
fn arguments(m: &mut Method, r: &mut Reader<'_>, parse_arguments: bool) -> Option<()> {
    let f = &mut m.fields;
    let table = |r: &mut Reader<'_>, f: &mut AmqpTxn, bad: &mut bool| {
        if !parse_arguments || r.rest().is_empty() {
            return;
        }
        match r.table() {
            Ok(t) => f.arguments = t,
            Err(_) => *bad = true,
        }
    };
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    match (m.class, m.id) {
        // connection.start: the server's version, properties, mechanisms and locales.
        (10, 10) => {
            f.version_major = Some(r.u8()?);
            f.version_minor = Some(r.u8()?);
            f.server_properties = r.table().ok()?;
            f.mechanisms = Some(r.long_str()?);
            f.locales = Some(r.long_str()?);
        }
        // connection.start-ok: the SASL response (credentials) is skipped, never kept.
        (10, 11) => {
            f.client_properties = r.table().ok()?;
            f.mechanism = Some(r.short_str()?);
            r.skip_long_str()?;
            f.locale = Some(r.short_str()?);
        }
        (10, 31) => {
            f.channel_max = Some(r.u16()?);
            f.frame_max = Some(r.u32()?);
            f.heartbeat = Some(r.u16()?);
        }
        (10, 40) => f.virtual_host = Some(r.short_str()?),
        (10, 50) | (20, 40) => {
            f.reply_code = Some(r.u16()?);
            f.reply_text = Some(r.short_str()?);
            f.class_id = Some(r.u16()?);
            f.method_id = Some(r.u16()?);
        }
        (20, 21) => f.active = Some(bits(r.u8()?)[0]),
        (40, 10) => {
            r.u16()?;
            let exchange = r.short_str()?;
            let kind = r.short_str()?;
            let b = bits(r.u8()?);
            m.arg = Some(exchange.clone());
            f.exchange = Some(exchange);
            f.exchange_type = Some(if kind.is_empty() {
                "direct".into()
            } else {
                kind
            });
            f.passive = Some(b[0]);
            f.durable = Some(b[1]);
            f.no_wait = Some(b[4]);
            table(r, f, &mut m.bad_arguments);
        }
        (40, 20) => {
            r.u16()?;
            let exchange = r.short_str()?;
            let b = bits(r.u8()?);
            m.arg = Some(exchange.clone());
            f.exchange = Some(exchange);
            f.if_unused = Some(b[0]);
            f.no_wait = Some(b[1]);
        }
        (40, 30) | (40, 40) => {
            r.u16()?;
            let destination = r.short_str()?;
            let source = r.short_str()?;
            f.routing_key = Some(r.short_str()?);
            f.no_wait = Some(bits(r.u8()?)[0]);
            m.arg = Some(format!("{source} {destination}"));
            f.destination = Some(destination);
            f.source = Some(source);
            table(r, f, &mut m.bad_arguments);
        }
        (50, 10) => {
            r.u16()?;
            let queue = r.short_str()?;
            let b = bits(r.u8()?);
            m.arg = Some(queue.clone());
            f.queue = Some(queue);
            f.passive = Some(b[0]);
            f.durable = Some(b[1]);
            f.exclusive = Some(b[2]);
            f.auto_delete = Some(b[3]);
            f.no_wait = Some(b[4]);
            table(r, f, &mut m.bad_arguments);
        }
        (50, 11) => {
            f.queue = Some(r.short_str()?);
            f.message_count = Some(r.u32()?);
            f.consumer_count = Some(r.u32()?);
        }
        // queue.bind has a no-wait bit, queue.unbind does not.
        (50, 20) | (50, 50) => {
            r.u16()?;
            let queue = r.short_str()?;
            let exchange = r.short_str()?;
            f.routing_key = Some(r.short_str()?);
            if m.id == 20 {
                f.no_wait = Some(bits(r.u8()?)[0]);
            }
            m.arg = Some(format!("{queue} {exchange}"));
            f.queue = Some(queue);
            f.exchange = non_empty(exchange);
            table(r, f, &mut m.bad_arguments);
        }
        (50, 30) => {
            r.u16()?;
            let queue = r.short_str()?;
            f.no_wait = Some(bits(r.u8()?)[0]);
            m.arg = Some(queue.clone());
            f.queue = Some(queue);
        }
        (50, 31) | (50, 41) => f.message_count = Some(r.u32()?),
        (50, 40) => {
            r.u16()?;
            let queue = r.short_str()?;
            let b = bits(r.u8()?);
            m.arg = Some(queue.clone());
            f.queue = Some(queue);
            f.if_unused = Some(b[0]);
            f.if_empty = Some(b[1]);
            f.no_wait = Some(b[2]);
        }
        (60, 10) => {
            f.prefetch_size = Some(r.u32()?);
            f.prefetch_count = Some(r.u16()?);
            f.global = Some(bits(r.u8()?)[0]);
        }
        (60, 20) => {
            r.u16()?;
            let queue = r.short_str()?;
            f.consumer_tag = Some(r.short_str()?);
            let b = bits(r.u8()?);
            m.arg = Some(queue.clone());
            f.queue = Some(queue);
            f.no_local = Some(b[0]);
            f.no_ack = Some(b[1]);
            f.exclusive = Some(b[2]);
            f.no_wait = Some(b[3]);
            table(r, f, &mut m.bad_arguments);
        }
        (60, 21) | (60, 31) => f.consumer_tag = Some(r.short_str()?),
        (60, 30) => {
            let tag = r.short_str()?;
            f.no_wait = Some(bits(r.u8()?)[0]);
            m.arg = Some(tag.clone());
            f.consumer_tag = Some(tag);
        }
        (60, 40) => {
            r.u16()?;
            f.exchange = non_empty(r.short_str()?);
            f.routing_key = Some(r.short_str()?);
            let b = bits(r.u8()?);
            f.mandatory = Some(b[0]);
            f.immediate = Some(b[1]);
        }
        (60, 50) => {
            f.reply_code = Some(r.u16()?);
            f.reply_text = Some(r.short_str()?);
            f.exchange = Some(r.short_str()?);
            f.routing_key = Some(r.short_str()?);
        }
        (60, 60) => {
            f.consumer_tag = Some(r.short_str()?);
            f.delivery_tag = Some(r.u64()?);
            f.redelivered = Some(bits(r.u8()?)[0]);
            f.exchange = non_empty(r.short_str()?);
            f.routing_key = Some(r.short_str()?);
        }
        (60, 70) => {
            r.u16()?;
            let queue = r.short_str()?;
            f.no_ack = Some(bits(r.u8()?)[0]);
            m.arg = Some(queue.clone());
            f.queue = Some(queue);
        }
        (60, 71) => {
            f.delivery_tag = Some(r.u64()?);
            f.redelivered = Some(bits(r.u8()?)[0]);
            f.exchange = non_empty(r.short_str()?);
            f.routing_key = Some(r.short_str()?);
            f.message_count = Some(r.u32()?);
        }
        (60, 80) => {
            f.delivery_tag = Some(r.u64()?);
            f.multiple = Some(bits(r.u8()?)[0]);
        }
        // basic.reject's bit is `requeue`; Packetbeat names it `multiple`, and so do we.
        (60, 90) => {
            let tag = r.u64()?;
            f.delivery_tag = Some(tag);
            f.multiple = Some(bits(r.u8()?)[0]);
            m.arg = Some(tag.to_string());
        }
        (60, 110) => f.requeue = Some(bits(r.u8()?)[0]),
        (60, 120) => {
            f.delivery_tag = Some(r.u64()?);
            let b = bits(r.u8()?);
            f.multiple = Some(b[0]);
            f.requeue = Some(b[1]);
        }
        // The others carry nothing Packetbeat reports (connection.tune's proposal is
        // reported from tune-ok, what the client settled on).
        _ => {}
    }
    Some(())
}

/// A content header: the size of the body that follows, and the message properties.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentHeader {
    pub class: u16,
    pub body_size: u64,
    pub properties: AmqpTxn,
    /// The headers table could not be read (the other properties are kept).
    pub bad_headers: bool,
}

/// Decodes a content header frame's payload; `parse_headers`: read the properties.
pub fn content_header(payload: &[u8], parse_headers: bool) -> Result<ContentHeader, ParseError> {
    const SHORT: ParseError = ParseError("AMQP content header shorter than its properties");
    let mut r = Reader::new(payload);
    let (Some(class), Some(_weight), Some(body_size)) = (r.u16(), r.u16(), r.u64()) else {
        return Err(SHORT);
    };
    let mut h = ContentHeader {
        class,
        body_size,
        properties: AmqpTxn::default(),
        bad_headers: false,
    };
    if parse_headers {
        properties(&mut h, &mut r).ok_or(SHORT)?;
    }
    Ok(h)
}

/// The basic class's properties, in flag order (bit 15 first).
fn properties(h: &mut ContentHeader, r: &mut Reader<'_>) -> Option<()> {
    let flags = r.u16()?;
    // Further flag words (bit 0 set) name properties no class defines: skipped.
    let mut more = flags & 1 != 0;
    let mut words = 0;
    while more {
        words += 1;
        if words > 4 {
            return None;
        }
        more = r.u16()? & 1 != 0;
    }
    let has = |bit: u16| flags & (1 << bit) != 0;
    let p = &mut h.properties;
    if has(15) {
        p.content_type = Some(r.short_str()?);
    }
    if has(14) {
        p.content_encoding = Some(r.short_str()?);
    }
    if has(13) {
        match r.table() {
            Ok(t) => p.headers = t,
            Err(_) => {
                h.bad_headers = true;
                return Some(());
            }
        }
    }
    if has(12) {
        p.delivery_mode = match r.u8()? {
            1 => Some("non-persistent"),
            2 => Some("persistent"),
            _ => None,
        };
    }
    if has(11) {
        p.priority = Some(r.u8()?);
    }
    if has(10) {
        p.correlation_id = Some(r.short_str()?);
    }
    if has(9) {
        p.reply_to = Some(r.short_str()?);
    }
    if has(8) {
        p.expiration = Some(r.short_str()?);
    }
    if has(7) {
        p.message_id = Some(r.short_str()?);
    }
    if has(6) {
        p.timestamp = Some(super::fields::timestamp(r.u64()?));
    }
    if has(5) {
        p.r#type = Some(r.short_str()?);
    }
    if has(4) {
        p.user_id = Some(r.short_str()?);
    }
    if has(3) {
        p.app_id = Some(r.short_str()?);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(s: &str) -> Vec<u8> {
        let mut v = vec![s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn queue_declare_reads_name_flags_and_arguments() {
        let mut p = vec![0, 50, 0, 10, 0, 0];
        p.extend(short("hello"));
        p.push(0b0000_0110); // durable, exclusive
        let arg = [&short("x-max-length")[..], b"I", &10i32.to_be_bytes()].concat();
        p.extend((arg.len() as u32).to_be_bytes());
        p.extend(&arg);
        let m = method(&p, true).unwrap().unwrap();
        assert_eq!(m.name, "queue.declare");
        assert_eq!(m.role, Role::Request);
        assert_eq!(m.arg.as_deref(), Some("hello"));
        let f = &m.fields;
        assert_eq!(f.queue.as_deref(), Some("hello"));
        assert_eq!(
            (f.passive, f.durable, f.exclusive, f.auto_delete, f.no_wait),
            (
                Some(false),
                Some(true),
                Some(true),
                Some(false),
                Some(false)
            )
        );
        assert_eq!(f.arguments.as_ref().unwrap()["x-max-length"], 10);
        let m = method(&p, false).unwrap().unwrap();
        assert_eq!(m.fields.arguments, None, "parse_arguments: false");
    }

    #[test]
    fn start_ok_never_keeps_the_sasl_response() {
        let mut p = vec![0, 10, 0, 11, 0, 0, 0, 0];
        p.extend(short("PLAIN"));
        p.extend(15u32.to_be_bytes());
        p.extend(b"\0guest\0s3cr3t!!");
        p.extend(short("en_US"));
        let m = method(&p, true).unwrap().unwrap();
        assert_eq!(m.fields.mechanism.as_deref(), Some("PLAIN"));
        assert_eq!(m.fields.locale.as_deref(), Some("en_US"));
        let json = serde_json::to_string(&m.fields).unwrap();
        assert!(
            !json.contains("s3cr3t") && !json.contains("guest"),
            "{json}"
        );
        assert!(m.connection_info);
    }

    #[test]
    fn close_and_unknown_and_short_methods() {
        let mut p = vec![0, 20, 0, 40, 1, 0x94];
        p.extend(short("NOT_FOUND - no queue 'x'"));
        p.extend([0, 50, 0, 10]);
        let m = method(&p, true).unwrap().unwrap();
        assert_eq!(m.name, "channel.close");
        assert_eq!(m.fields.reply_code, Some(404));
        assert_eq!(
            (m.fields.class_id, m.fields.method_id),
            (Some(50), Some(10))
        );
        assert_eq!(method(&[0, 85, 0, 10, 0], true), Ok(None), "confirm.select");
        assert!(method(&[0, 50, 0, 10, 0, 0, 9, b'a'], true).is_err());
        assert!(method(&[0], true).is_err());
    }

    #[test]
    fn content_header_properties() {
        let mut p = vec![0, 60, 0, 0];
        p.extend(5u64.to_be_bytes());
        p.extend((1u16 << 15 | 1 << 12 | 1 << 4 | 1 << 6).to_be_bytes());
        p.extend(short("text/plain"));
        p.push(2);
        p.extend(0u64.to_be_bytes());
        p.extend(short("guest"));
        let h = content_header(&p, true).unwrap();
        assert_eq!(h.body_size, 5);
        let q = &h.properties;
        assert_eq!(q.content_type.as_deref(), Some("text/plain"));
        assert_eq!(q.delivery_mode, Some("persistent"));
        assert_eq!(q.timestamp.as_deref(), Some("January  1 00:00:00 1970"));
        assert_eq!(q.user_id.as_deref(), Some("guest"));
        assert_eq!(
            content_header(&p, false).unwrap().properties,
            AmqpTxn::default()
        );
        assert!(content_header(&p[..20], true).is_err());
    }

    #[test]
    fn frame_and_protocol_headers() {
        assert_eq!(
            frame_head(&[1, 0, 1, 0, 0, 0, 9]),
            Some(FrameHead {
                kind: METHOD,
                channel: 1,
                size: 9
            })
        );
        assert_eq!(frame_head(&[1, 0]), None);
        assert_eq!(is_protocol_header(b"AMQP\0\0\x09\x01"), Some(true));
        assert_eq!(is_protocol_header(b"AMQ"), None);
        assert_eq!(is_protocol_header(b"\x01\0\0"), Some(false));
    }
}
