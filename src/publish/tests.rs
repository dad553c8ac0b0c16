use super::*;
use crate::output::OutputError;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::time::SystemTime;

/// What the scripted output does on one call.
enum Step {
    Fail,
    FailRetryAfter(Duration),
    Statuses(Box<dyn Fn(&Value) -> EventStatus + Send>),
}

/// Records accepted events; follows a script of failures first, then accepts.
struct Scripted {
    seen: Arc<Mutex<Vec<Value>>>,
    calls: Arc<Mutex<Vec<usize>>>,
    script: VecDeque<Step>,
}

impl Output for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn publish(&mut self, batch: &[Record]) -> Result<Outcome, OutputError> {
        self.calls.lock().unwrap().push(batch.len());
        match self.script.pop_front() {
            Some(Step::Fail) => Err(OutputError::Config("down".into())),
            Some(Step::FailRetryAfter(d)) => Err(OutputError::Unavailable {
                output: "scripted",
                message: "busy".into(),
                retry_after: Some(d),
            }),
            Some(Step::Statuses(f)) => {
                let st: Vec<EventStatus> = batch.iter().map(|e| f(&e.value())).collect();
                let mut seen = self.seen.lock().unwrap();
                for (e, s) in batch.iter().zip(&st) {
                    if *s == EventStatus::Acked {
                        seen.push(e.value());
                    }
                }
                Ok(Outcome::PerEvent(st))
            }
            None => {
                self.seen
                    .lock()
                    .unwrap()
                    .extend(batch.iter().map(Record::value));
                Ok(Outcome::Acked)
            }
        }
    }
}

fn settings() -> PipelineSettings {
    PipelineSettings {
        queue_events: 16,
        min_events: 4,
        bulk_max: 8,
        flush_timeout: Duration::from_millis(50),
        backoff_init: Duration::from_millis(1),
        backoff_max: Duration::from_millis(4),
        max_retries: -1,
        disk: None,
    }
}

fn common() -> CommonFields {
    CommonFields {
        agent_type: "connbeat",
        name: "t".into(),
        hostname: "t".into(),
        version: "0".into(),
        tags: vec![],
        fields: Default::default(),
        fields_under_root: false,
        shape: Default::default(),
    }
}

fn run_script(s: PipelineSettings, script: Vec<Step>, n: i64) -> (Vec<i64>, Vec<usize>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let out = Scripted {
        seen: seen.clone(),
        calls: calls.clone(),
        script: script.into(),
    };
    let (p, pipe) = start(s, Box::new(out), common()).unwrap();
    for i in 0..n {
        assert!(p.publish(Event::new(SystemTime::now(), "t", json!({"n": i}))));
    }
    drop(p);
    assert!(pipe.finish(Duration::from_secs(20)));
    let all = seen
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["n"].as_i64().unwrap())
        .collect();
    let calls = calls.lock().unwrap().clone();
    (all, calls)
}

#[test]
fn every_event_arrives_in_order_after_retries() {
    let (all, calls) = run_script(settings(), vec![Step::Fail, Step::Fail, Step::Fail], 100);
    assert_eq!(all, (0..100).collect::<Vec<_>>());
    assert!(calls.iter().all(|n| *n <= 8));
}

#[test]
fn per_event_retries_are_sent_again_and_drops_are_not() {
    // First call: even events acked, n%4==1 retried, n%4==3 dropped.
    let first = Step::Statuses(Box::new(|e: &Value| {
        let n = e["n"].as_i64().unwrap();
        match n % 4 {
            0 | 2 => EventStatus::Acked,
            1 => EventStatus::Retry,
            _ => EventStatus::Dropped("test says no".into()),
        }
    }));
    let s = PipelineSettings {
        min_events: 8,
        flush_timeout: Duration::from_secs(5),
        ..settings()
    };
    let (mut all, calls) = run_script(s, vec![first], 8);
    // The second call carried only the two events to retry.
    assert_eq!(calls[..2], [8, 2]);
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 4, 5, 6]);
}

#[test]
fn a_batch_is_dropped_after_max_retries() {
    let s = PipelineSettings {
        max_retries: 2,
        min_events: 8,
        flush_timeout: Duration::from_secs(5),
        ..settings()
    };
    // 3 failures: the first attempt and 2 retries, then the batch is dropped; the next
    // batch goes through.
    let (all, calls) = run_script(s, vec![Step::Fail, Step::Fail, Step::Fail], 16);
    assert_eq!(calls, vec![8, 8, 8, 8]);
    assert_eq!(all, (8..16).collect::<Vec<_>>());
}

#[test]
fn retry_after_from_the_destination_is_used_instead_of_the_backoff() {
    // backoff.max is 4 ms; the destination asks for 1 ms: delivery completes.
    let (all, calls) = run_script(
        settings(),
        vec![Step::FailRetryAfter(Duration::from_millis(1))],
        4,
    );
    assert_eq!(all, vec![0, 1, 2, 3]);
    assert_eq!(calls.len(), 2);
}

/// Blocks every publish until released, to fill the queue.
struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Output for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }
    fn publish(&mut self, _: &[Record]) -> Result<Outcome, OutputError> {
        let (m, cv) = &*self.0;
        let mut open = m.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        Ok(Outcome::Acked)
    }
}

#[test]
fn a_full_queue_is_visible_to_sources_and_try_publish_hands_the_event_back() {
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let s = PipelineSettings {
        queue_events: 4,
        min_events: 1,
        bulk_max: 1,
        ..settings()
    };
    let (p, pipe) = start(s, Box::new(Gate(gate.clone())), common()).unwrap();
    let ev = |i: i64| Event::new(SystemTime::now(), "t", json!({"n": i}));
    // One event goes into the (blocked) output, four fill the queue.
    let mut queued = 0;
    let full = poll_until(Duration::from_secs(10), || {
        match p.try_publish(ev(queued)) {
            Ok(()) => {
                queued += 1;
                false
            }
            Err(TryPublishError::Full(_)) => true,
            Err(TryPublishError::Closed(_)) => panic!("pipeline closed"),
        }
    });
    assert!(full, "the queue never filled");
    assert!(p.is_full());
    assert_eq!(p.free(), 0);
    assert!(queued >= 4);
    {
        let (m, cv) = &*gate;
        *m.lock().unwrap() = true;
        cv.notify_all();
    }
    assert!(poll_until(Duration::from_secs(10), || !p.is_full()));
    drop(p);
    assert!(pipe.finish(Duration::from_secs(10)));
}

/// Calls `f` until it returns true or `timeout` passes; the last answer.
fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
