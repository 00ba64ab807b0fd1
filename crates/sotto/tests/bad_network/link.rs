//! The impaired link: the test process reads IP packets from the TUN device
//! on one side, lets [`Impairment`] decide their fate, and writes them to the
//! TUN device on the other side when their time comes. Everything between
//! the two namespaces crosses it: TCP (HTTPS, the session channel) and UDP
//! (ICE, DTLS, RTP).
//!
//! The driver is a current-thread tokio runtime on a thread of its own, so
//! the link keeps time however busy the test is.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use super::impairment::{Conditions, Counters, Impairment, Verdict};

struct Shared {
    conditions: Mutex<Conditions>,
    /// Server side → client side, and back.
    counters: Mutex<[Counters; 2]>,
}

/// A running link between two TUN devices; stops (and closes the devices)
/// on drop.
pub struct Link {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Link {
    /// Forwards between `a` and `b`, perfectly until told otherwise. Each
    /// direction draws from its own generator seeded from `seed`.
    pub fn start(a: File, b: File, seed: u64) -> io::Result<Link> {
        let shared = Arc::new(Shared {
            conditions: Mutex::new(Conditions::default()),
            counters: Mutex::new([Counters::default(); 2]),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bad-link".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let (a, b) = match (register(a), register(b)) {
                        (Ok(a), Ok(b)) => (Arc::new(a), Arc::new(b)),
                        (Err(e), _) | (_, Err(e)) => {
                            eprintln!("bad link: cannot register the TUN devices: {e}");
                            return;
                        }
                    };
                    let there = forward(a.clone(), b.clone(), for_thread.clone(), 0, seed);
                    let back = forward(b, a, for_thread, 1, seed ^ 0x5eed);
                    tokio::select! {
                        _ = stopped => {}
                        e = there => eprintln!("bad link: server → client stopped: {e:?}"),
                        e = back => eprintln!("bad link: client → server stopped: {e:?}"),
                    }
                });
            })?;
        Ok(Link {
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// From now on, packets meet `conditions` (an outage in progress stays).
    pub fn set(&self, conditions: Conditions) {
        let mut c = self.shared.conditions.lock().unwrap();
        let down_until = c.down_until;
        *c = Conditions {
            down_until,
            ..conditions
        };
    }

    /// Drops everything, both ways, for `how_long` from now.
    pub fn outage(&self, how_long: Duration) -> Instant {
        let until = Instant::now() + how_long;
        self.shared.conditions.lock().unwrap().down_until = Some(until);
        until
    }

    /// Server side → client side, and back.
    pub fn counters(&self) -> [Counters; 2] {
        *self.shared.counters.lock().unwrap()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The thread may have ended already (then it said why).
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("bad link: the link thread panicked");
        }
    }
}

fn register(device: File) -> io::Result<AsyncFd<File>> {
    // SAFETY: the file owns its descriptor, which stays open and the same
    // for as long as the AsyncFd (its only owner from here on) lives.
    unsafe { AsyncFd::register(device) }.map_err(io::Error::from)
}

/// A packet waiting in the link: when it leaves, then arrival order.
type Queued = Reverse<(Instant, u64, Vec<u8>)>;

/// One direction: reads `from`, writes `to`. Returns only on a read error.
async fn forward(
    from: Arc<AsyncFd<File>>,
    to: Arc<AsyncFd<File>>,
    shared: Arc<Shared>,
    direction: usize,
    seed: u64,
) -> io::Error {
    let mut core = Impairment::new(seed);
    let mut queue: BinaryHeap<Queued> = BinaryHeap::new();
    let mut arrivals = 0u64;
    let mut buf = vec![0u8; 65_536];
    loop {
        let due = queue.peek().map(|Reverse((at, _, _))| *at);
        tokio::select! {
            ready = from.readable() => {
                let mut guard = match ready {
                    Ok(guard) => guard,
                    Err(e) => return e,
                };
                loop {
                    let len = match guard.try_io(|f| f.get_ref().read(&mut buf)) {
                        Ok(Ok(len)) => len,
                        Ok(Err(e)) => return e,
                        Err(_would_block) => break,
                    };
                    let conditions = *shared.conditions.lock().unwrap();
                    if let Verdict::At(at) = core.handle_packet(Instant::now(), &conditions) {
                        arrivals += 1;
                        queue.push(Reverse((at, arrivals, buf[..len].to_vec())));
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(
                due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            )), if due.is_some() => {}
        }
        let now = Instant::now();
        while queue.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            let Some(Reverse((_, _, packet))) = queue.pop() else {
                break;
            };
            // A TUN device takes a whole packet or refuses it (e.g. while
            // it is not up yet): a refused packet is lost, and counted.
            match to.get_ref().write(&packet) {
                Ok(n) if n == packet.len() => core.counters.delivered += 1,
                Ok(_) | Err(_) => core.counters.write_failed += 1,
            }
        }
        shared.counters.lock().unwrap()[direction] = core.counters;
    }
}
