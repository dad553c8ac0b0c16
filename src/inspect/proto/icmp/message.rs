//! What an ICMP message is, from its version and type: request or response, one that waits
//! for a counterpart or stands alone, an error report or not, and its name as Packetbeat
//! writes it (`EchoRequest`, `DestinationUnreachable(Port)`, `TimeExceeded(TTLExceeded)`).
//! Pure tables, no state.

use std::borrow::Cow;

/// Types that answer another message (every other type is a request).
fn is_response_type(version: u8, t: u8) -> bool {
    match version {
        4 => matches!(t, 0 | 14 | 16 | 18),
        _ => t == 129,
    }
}

/// Types that report an error about another packet.
pub fn is_error_type(version: u8, t: u8) -> bool {
    match version {
        4 => matches!(t, 3 | 4 | 11 | 12),
        _ => matches!(t, 1..=4),
    }
}

/// Types that come in request/response pairs (the others are single events).
pub fn is_pair_type(version: u8, t: u8) -> bool {
    match version {
        4 => matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18),
        _ => matches!(t, 128 | 129),
    }
}

pub fn is_request(version: u8, t: u8) -> bool {
    !is_response_type(version, t)
}

/// (type name, code names) of ICMPv4.
fn v4_names(t: u8) -> Option<(&'static str, &'static [(u8, &'static str)])> {
    Some(match t {
        0 => ("EchoReply", &[]),
        3 => (
            "DestinationUnreachable",
            &[
                (0, "Net"),
                (1, "Host"),
                (2, "Protocol"),
                (3, "Port"),
                (4, "FragmentationNeeded"),
                (5, "SourceRoutingFailed"),
                (6, "NetUnknown"),
                (7, "HostUnknown"),
                (8, "SourceIsolated"),
                (9, "NetAdminProhibited"),
                (10, "HostAdminProhibited"),
                (11, "NetTOS"),
                (12, "HostTOS"),
                (13, "CommAdminProhibited"),
                (14, "HostPrecedence"),
                (15, "PrecedenceCutoff"),
            ],
        ),
        4 => ("SourceQuench", &[]),
        5 => (
            "Redirect",
            &[(0, "Net"), (1, "Host"), (2, "TOS+Net"), (3, "TOS+Host")],
        ),
        8 => ("EchoRequest", &[]),
        9 => ("RouterAdvertisement", &[]),
        10 => ("RouterSolicitation", &[]),
        11 => (
            "TimeExceeded",
            &[(0, "TTLExceeded"), (1, "FragmentReassemblyTimeExceeded")],
        ),
        12 => (
            "ParameterProblem",
            &[
                (0, "PointerIndicatesError"),
                (1, "MissingOption"),
                (2, "BadLength"),
            ],
        ),
        13 => ("TimestampRequest", &[]),
        14 => ("TimestampReply", &[]),
        15 => ("InfoRequest", &[]),
        16 => ("InfoReply", &[]),
        17 => ("AddressMaskRequest", &[]),
        18 => ("AddressMaskReply", &[]),
        _ => return None,
    })
}

/// (type name, code names) of ICMPv6.
fn v6_names(t: u8) -> Option<(&'static str, &'static [(u8, &'static str)])> {
    Some(match t {
        1 => (
            "DestinationUnreachable",
            &[
                (0, "NoRouteToDst"),
                (1, "AdminProhibited"),
                (2, "BeyondScopeOfSrc"),
                (3, "AddressUnreachable"),
                (4, "PortUnreachable"),
                (5, "SrcAddressFailedPolicy"),
                (6, "RejectRouteToDst"),
            ],
        ),
        2 => ("PacketTooBig", &[]),
        3 => (
            "TimeExceeded",
            &[
                (0, "HopLimitExceeded"),
                (1, "FragmentReassemblyTimeExceeded"),
            ],
        ),
        4 => (
            "ParameterProblem",
            &[
                (0, "ErroneousHeaderField"),
                (1, "UnrecognizedNextHeader"),
                (2, "UnrecognizedIPv6Option"),
            ],
        ),
        128 => ("EchoRequest", &[]),
        129 => ("EchoReply", &[]),
        133 => ("RouterSolicitation", &[]),
        134 => ("RouterAdvertisement", &[]),
        135 => ("NeighborSolicitation", &[]),
        136 => ("NeighborAdvertisement", &[]),
        137 => ("Redirect", &[]),
        _ => return None,
    })
}

/// The message's name: the type's, with the code's in parentheses where the type has
/// codes (or `Code: n` for a code it does not name); `type(code)` for an unknown type.
pub fn name(version: u8, t: u8, code: u8) -> Cow<'static, str> {
    let names = if version == 4 {
        v4_names(t)
    } else {
        v6_names(t)
    };
    let Some((type_name, codes)) = names else {
        return Cow::Owned(format!("{t}({code})"));
    };
    if codes.is_empty() {
        return if code == 0 {
            Cow::Borrowed(type_name)
        } else {
            Cow::Owned(format!("{type_name}(Code: {code})"))
        };
    }
    match codes.iter().find(|(c, _)| *c == code) {
        Some((_, c)) => Cow::Owned(format!("{type_name}({c})")),
        None => Cow::Owned(format!("{type_name}(Code: {code})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_packetbeat() {
        assert_eq!(name(4, 8, 0), "EchoRequest");
        assert_eq!(name(4, 3, 1), "DestinationUnreachable(Host)");
        assert_eq!(name(4, 11, 0), "TimeExceeded(TTLExceeded)");
        assert_eq!(name(4, 0, 7), "EchoReply(Code: 7)");
        assert_eq!(name(4, 3, 99), "DestinationUnreachable(Code: 99)");
        assert_eq!(name(6, 129, 0), "EchoReply");
        assert_eq!(name(6, 1, 3), "DestinationUnreachable(AddressUnreachable)");
        assert_eq!(name(6, 3, 0), "TimeExceeded(HopLimitExceeded)");
        assert_eq!(name(6, 200, 1), "200(1)");
    }

    #[test]
    fn kinds() {
        assert!(is_request(4, 8) && !is_request(4, 0) && is_request(4, 3));
        assert!(is_request(6, 128) && !is_request(6, 129) && is_request(6, 135));
        assert!(is_pair_type(4, 8) && !is_pair_type(4, 3) && !is_pair_type(6, 135));
        assert!(is_error_type(4, 11) && is_error_type(6, 1) && !is_error_type(6, 128));
    }
}
