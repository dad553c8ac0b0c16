//! Self-monitoring: every counter the agent keeps, in one registry.
//!
//! Counters are plain atomics in one static struct, so any stage can bump one without
//! locking or passing handles around. [`snapshot`] reads them all by their public dotted
//! names, which is what `/stats`, `/metrics` and the periodic log line print.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $field:ident => $name:literal, $help:literal; )*) => {
        /// All counters; see [`METRICS`].
        #[derive(Default)]
        pub struct Metrics {
            $( #[doc = $help] pub $field: AtomicU64, )*
        }

        /// Every counter's dotted name and help text, in a stable order.
        pub const COUNTERS: &[(&str, &str)] = &[ $( ($name, $help), )* ];

        impl Metrics {
            /// Reads every counter, in the order of [`COUNTERS`].
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![ $( ($name, self.$field.load(Ordering::Relaxed)), )* ]
            }
        }
    };
}

counters! {
    conn_polls => "conn.polls", "polls completed";
    conn_polls_unchanged => "conn.polls.unchanged", "polls answered without a dump: no socket opened or closed since the last one";
    conn_poll_errors => "conn.poll.errors", "polls that failed (netlink error); the next poll retries";
    conn_poll_duration_us => "conn.poll.duration_us", "duration of the last poll, microseconds";
    conn_poll_skipped => "conn.poll.skipped", "polls skipped: the queue was full (the output is behind) or the previous poll overran the interval";
    conn_sockets_seen => "conn.sockets.seen", "sockets in the last poll";
    conn_sockets_tracked => "conn.sockets.tracked", "connections in the table";
    conn_table_evicted => "conn.table.evicted", "connections dropped from the table because connbeat.max_connections was reached";
    conn_timewait_skipped => "conn.sockets.timewait_skipped", "TIME_WAIT sockets a poll received and did not report (already closed; dumps normally leave them to the kernel)";
    conn_events_listening => "conn.events.listening", "listening events";
    conn_events_open => "conn.events.open", "open events";
    conn_events_active => "conn.events.active", "active events";
    conn_events_closed => "conn.events.closed", "closed events";
    conn_closes_received => "conn.close_events.received", "destroy notifications received from the kernel";
    conn_closes_lost => "conn.close_events.lost", "times the kernel dropped destroy notifications (ENOBUFS); the next poll resynchronises";
    conn_polls_changes => "conn.polls.changes", "polls that looked up only the TCP sockets the kernel saw change state (follow_state_changes)";
    conn_changes_looked_up => "conn.changes.looked_up", "sockets looked up because they changed state";
    conn_closes_by_poll => "conn.close_events.by_poll", "closes found by poll diff (no destroy notification seen)";
    conn_decode_errors => "conn.decode_errors", "netlink messages that could not be decoded";
    conn_netns_watched => "conn.netns.watched", "network namespaces watched";
    conn_netns_errors => "conn.netns.errors", "namespaces that could not be entered or dumped";
    procs_hits => "procs.attribution.hits", "sockets attributed to a process through the fd index";
    procs_listener => "procs.attribution.listener", "accepted sockets attributed to their listening process";
    procs_connect => "procs.attribution.connect", "outgoing connections attributed to the process recorded when it connected";
    procs_connects => "procs.connects.recorded", "outgoing connects delivered by the connect-time recorder";
    procs_connects_late => "procs.connects.from_map", "connects found in the recorder's map, not delivered in time by its ring buffer";
    procs_cache => "procs.attribution.cache", "closed sockets attributed from the owner remembered";
    procs_misses => "procs.attribution.misses", "sockets whose owner could not be found";
    procs_scans => "procs.scans.partial", "incremental process scans";
    procs_full_scans => "procs.scans.full", "full scans of every process's fds";
    procs_fds_read => "procs.fds.read", "fd links read from /proc";
    procs_fd_walks => "procs.fds.walks", "walks of every process's open files by the BPF iterator";
    procs_read_errors => "procs.read_errors", "/proc entries that could not be read (process gone, permission), and failed BPF walks";
    procs_cached => "procs.cached", "processes whose details are cached";
    queue_events => "queue.events", "events currently queued";
    queue_published => "queue.published", "events accepted into the queue";
    output_events_acked => "output.events.acked", "events the output confirmed";
    output_events_failed => "output.events.failed", "events whose write failed (retried or dropped)";
    output_events_dropped => "output.events.dropped", "events dropped by the output, with a logged reason";
    output_events_dry_run => "output.events.dry_run", "events built and counted but not published (-N)";
    output_write_bytes => "output.write.bytes", "bytes written by the output";
    output_write_errors => "output.write.errors", "output write errors";
    output_retries => "output.retries", "output retries";
    procs_evicted => "procs.evicted", "processes dropped from the process cache because max_processes was reached";
    inspect_pcap_received => "inspect.pcap.received", "packets read from the capture (device or file)";
    inspect_pcap_bytes => "inspect.pcap.bytes", "bytes of the packets read from the capture";
    inspect_capture_dropped => "inspect.capture.dropped", "packets the kernel dropped because connbeat read too slowly (pcap ps_drop, af_packet PACKET_STATISTICS)";
    inspect_pcap_if_dropped => "inspect.pcap.if_dropped", "packets the interface or driver dropped (pcap ps_ifdrop)";
    inspect_decode_errors => "inspect.decode.errors", "frames whose headers were truncated or malformed";
    inspect_decode_unsupported => "inspect.decode.unsupported", "frames of protocols not inspected (ARP, ICMP, IPv6 fragments, ...)";
    inspect_frag_reassembled => "inspect.ip.fragments.reassembled", "IPv4 datagrams put back together from fragments";
    inspect_frag_dropped => "inspect.ip.fragments.dropped", "IPv4 fragments dropped (table full, timeout, malformed)";
    inspect_tcp_streams => "inspect.tcp.streams", "TCP connections tracked now";
    inspect_tcp_streams_opened => "inspect.tcp.streams.opened", "TCP connections tracked since start";
    inspect_tcp_streams_expired => "inspect.tcp.streams.expired", "TCP connections forgotten after stream_idle_timeout";
    inspect_tcp_streams_dropped => "inspect.tcp.streams.dropped", "packets of new TCP connections not inspected because interfaces.max_streams was reached";
    inspect_tcp_gaps => "inspect.tcp.gaps", "holes in TCP streams (lost or uncaptured segments)";
    inspect_tcp_gap_bytes => "inspect.tcp.gap_bytes", "bytes missing in those holes";
    inspect_tcp_retransmitted => "inspect.tcp.retransmitted", "segments carrying only data already seen (retransmissions, overlaps)";
    inspect_tcp_out_of_order => "inspect.tcp.out_of_order", "segments that arrived ahead of a hole";
    inspect_tcp_streams_reused => "inspect.tcp.streams.reused", "TCP connections ended by a new connection's SYN on the same addresses and ports";
    inspect_tcp_out_of_window => "inspect.tcp.out_of_window", "segments far outside their stream's sequence space that the peer never acknowledged (stale packets of an earlier connection): ignored";
    inspect_tcp_unsorted => "inspect.tcp.unsorted", "segments decoded after a later-stamped segment of their connection: more out of time order than interfaces.sort_window, or not held because reassembly_memory_mb was full";
    inspect_tcp_buffer_overflows => "inspect.tcp.buffer_overflows", "unparsed messages dropped for exceeding max_message_size or reassembly_memory_mb";
    inspect_udp_flows => "inspect.udp.flows", "UDP flows tracked now";
    inspect_udp_flows_dropped => "inspect.udp.flows.dropped", "datagrams of new UDP flows not inspected because interfaces.max_streams was reached";
    inspect_parse_errors => "inspect.parse.errors", "messages a protocol parser rejected; the bytes were skipped";
    inspect_transactions => "inspect.transactions", "transactions published";
    inspect_txn_no_response => "inspect.transactions.no_response", "requests published as errors without a response (timeout, closed, too many pending)";
    inspect_unmatched_responses => "inspect.transactions.unmatched_responses", "responses that matched no request";
    // --- AMQP ---
    inspect_amqp_unknown_methods => "inspect.amqp.unknown_methods", "AMQP method frames of classes or methods not decoded (confirm, ...): skipped";
    inspect_amqp_requests_replaced => "inspect.amqp.requests_replaced", "AMQP requests dropped unanswered because another request came on their channel first (as Packetbeat does)";
    inspect_amqp_content_dropped => "inspect.amqp.content_dropped", "AMQP messages (content header and body frames) dropped incomplete: a frame missing, a gap, the connection closed, or more channels carrying messages at once than max_pending_requests";
    inspect_amqp_resync_bytes => "inspect.amqp.resync_bytes", "bytes AMQP skipped to find the next frame after a gap or a damaged frame";
    inspect_icmp_pending_evicted => "inspect.icmp.pending_evicted", "ICMP requests published unanswered early because the icmp entry's max_pending was reached";
    inspect_flows => "inspect.flows", "flows tracked now (connbeat.flows)";
    inspect_flows_opened => "inspect.flows.opened", "flows tracked since start";
    inspect_flows_dropped => "inspect.flows.dropped", "packets of new flows not counted because connbeat.flows.max_flows was reached";
    inspect_flows_published => "inspect.flows.published", "flow events published (periodic and final)";
    // --- shipping: queue, pipeline, outputs (issue 3) ---
    queue_max_events => "queue.max_events", "capacity of the memory queue (queue.mem.events)";
    queue_full => "queue.full", "events a source could not queue because the queue was full (try_publish)";
    output_batches => "output.batches", "batches handed to the output, retries included";
    output_events_rejected => "output.events.rejected", "events the destination refused for good (HTTP 4xx, bulk item 4xx, Kafka message too large); dropped";
    output_events_retry_limit => "output.events.retry_limit", "events dropped after max_retries failed attempts";
    output_events_shutdown => "output.events.shutdown", "events dropped because shutdown_timeout ended their retries";
    queue_disk_events => "queue.disk.events", "events in the disk queue not yet acknowledged";
    queue_disk_bytes => "queue.disk.bytes", "bytes used by the disk queue's segment files";
    queue_disk_written => "queue.disk.written", "events written to the disk queue";
    queue_disk_syncs => "queue.disk.syncs", "group fsyncs of the disk queue";
    queue_disk_full => "queue.disk.full", "times the disk queue reached queue.disk.max_size and the intake waited";
    queue_disk_corrupt => "queue.disk.corrupt", "damaged disk-queue records skipped (checksum mismatch or torn write)";
    queue_disk_errors => "queue.disk.errors", "disk-queue write errors (retried)";
    queue_disk_too_large => "queue.disk.too_large", "events dropped because one alone is over half of queue.disk.max_size";
    processors_dropped => "processors.dropped", "events dropped by a drop_event processor, before the queue";
    processors_errors => "processors.errors", "processor steps that failed on an event (a missing field to drop or rename); the event went on";
    // --- memcache and mongodb (issue 10) ---
    inspect_memcache_values_dropped => "inspect.memcache.values_dropped", "memcache values and stats entries not kept: beyond maxvalues, or past the bound of one response";
    inspect_memcache_udp_dropped => "inspect.memcache.udp_dropped", "memcache datagrams dropped: too many request ids waiting, a repeated or inconsistent datagram of a multi-datagram message, a message over max_message_size, or one not completed in time";
    inspect_mongodb_unknown_opcodes => "inspect.mongodb.unknown_opcodes", "MongoDB messages with an opcode connbeat does not know: skipped (logged once per connection)";
    inspect_mongodb_compressed => "inspect.mongodb.compressed", "MongoDB OP_COMPRESSED messages decompressed and decoded";
    inspect_mongodb_compressed_undecoded => "inspect.mongodb.compressed_undecoded", "MongoDB OP_COMPRESSED messages not decoded: a compressor other than zlib, snappy or zstd, or a corrupt or oversized payload";
}

/// The process-wide counters.
pub static METRICS: std::sync::LazyLock<Metrics> = std::sync::LazyLock::new(Metrics::default);

/// Adds `n` to a counter.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Increments a counter.
#[inline]
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Sets a gauge.
#[inline]
pub fn set(c: &AtomicU64, n: u64) {
    c.store(n, Ordering::Relaxed);
}

/// Reads a counter.
#[inline]
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Counters that are gauges (a level, not a running total). The periodic log line prints
/// them by value, `/metrics` declares them `gauge`; every other counter only grows.
pub const GAUGES: &[&str] = &[
    "inspect.tcp.streams",
    "inspect.udp.flows",
    "conn.poll.duration_us",
    "conn.sockets.seen",
    "conn.sockets.tracked",
    "queue.events",
    "procs.cached",
    "queue.max_events",
    "queue.disk.events",
    "queue.disk.bytes",
];

/// True when `name` is a gauge (see [`GAUGES`]).
pub fn is_gauge(name: &str) -> bool {
    GAUGES.contains(&name)
}

pub mod http;
pub mod periodic;
