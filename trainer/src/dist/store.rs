//! The rendezvous store: a key-value server on `MASTER_ADDR:MASTER_PORT`,
//! hosted by rank 0, that every rank connects to (as torch's `TCPStore`).
//!
//! Ranks exchange small values through it (an NCCL id, a barrier count), so
//! the protocol is one JSON object per line; every wait has a deadline, and a
//! barrier that times out names the ranks that never arrived.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::DistEnv;
use crate::error::{Error, Result};

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Set { key: String, value: Vec<u8> },
    Get { key: String, timeout_ms: u64 },
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Ok,
    Value(Vec<u8>),
    Timeout,
}

/// The shared table, with a condition variable for waiting readers.
type Table = Arc<(Mutex<HashMap<String, Vec<u8>>>, Condvar)>;

/// A connection to the job's store (rank 0 also hosts it).
pub struct TcpStore {
    stream: Mutex<(BufReader<TcpStream>, TcpStream)>,
    env: DistEnv,
    timeout: Duration,
}

impl TcpStore {
    /// Joins the store of `env`: rank 0 starts it, every rank connects,
    /// retrying until `timeout` (the other ranks may start first).
    pub fn connect(env: &DistEnv, timeout: Duration) -> Result<Self> {
        let address = format!("{}:{}", env.master_addr, env.master_port);
        if env.rank == 0 {
            let listener = TcpListener::bind(&address).map_err(|e| {
                Error::Usage(format!("rank 0 cannot host the rendezvous store on {address}: {e}; pick another MASTER_PORT"))
            })?;
            let table: Table = Arc::default();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let table = table.clone();
                    std::thread::spawn(move || serve(stream, table));
                }
            });
        }
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match TcpStream::connect(&address) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    return Err(Error::Usage(format!(
                        "rank {} could not reach the rendezvous store at {address} within {} s ({e}); is rank 0 running, and are MASTER_ADDR and MASTER_PORT the same on every rank?",
                        env.rank,
                        timeout.as_secs()
                    )))
                }
            }
        };
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Self {
            stream: Mutex::new((reader, stream)),
            env: env.clone(),
            timeout,
        })
    }

    /// Stores `value` under `key`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.request(&Request::Set {
            key: key.into(),
            value: value.to_vec(),
        })
        .map(|_| ())
    }

    /// The value of `key`, waiting for it up to the store's timeout.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.get_within(key, self.timeout)?.ok_or_else(|| {
            Error::Usage(format!(
                "rank {}: key `{key}` was not set within {} s",
                self.env.rank,
                self.timeout.as_secs()
            ))
        })
    }

    /// Waits until every rank has called `barrier(name)`; on timeout the
    /// error names the ranks that did not arrive.
    pub fn barrier(&self, name: &str) -> Result<()> {
        self.set(&format!("barrier/{name}/{}", self.env.rank), b"1")?;
        let deadline = Instant::now() + self.timeout;
        let mut missing = Vec::new();
        for rank in 0..self.env.world_size {
            let left = deadline.saturating_duration_since(Instant::now());
            if self
                .get_within(&format!("barrier/{name}/{rank}"), left)?
                .is_none()
            {
                missing.push(rank);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let ranks: Vec<String> = missing.iter().map(ToString::to_string).collect();
        Err(Error::Usage(format!(
            "rank{} {} did not join barrier `{name}` within {} s ({} of {} ranks arrived)",
            if missing.len() == 1 { "" } else { "s" },
            ranks.join(", "),
            self.timeout.as_secs(),
            self.env.world_size - missing.len(),
            self.env.world_size
        )))
    }

    fn get_within(&self, key: &str, wait: Duration) -> Result<Option<Vec<u8>>> {
        match self.request(&Request::Get {
            key: key.into(),
            timeout_ms: wait.as_millis() as u64,
        })? {
            Reply::Value(value) => Ok(Some(value)),
            Reply::Timeout => Ok(None),
            Reply::Ok => Err(Error::Usage(
                "the rendezvous store answered a get with no value".into(),
            )),
        }
    }

    fn request(&self, request: &Request) -> Result<Reply> {
        let mut guard = self
            .stream
            .lock()
            .expect("the store connection is never poisoned");
        let (reader, writer) = &mut *guard;
        let mut line = serde_json::to_string(request)?;
        line.push('\n');
        writer.write_all(line.as_bytes())?;
        let mut answer = String::new();
        if reader.read_line(&mut answer)? == 0 {
            return Err(Error::Usage(format!(
                "rank {}: the rendezvous store closed the connection (did rank 0 exit?)",
                self.env.rank
            )));
        }
        Ok(serde_json::from_str(&answer)?)
    }
}

/// Serves one rank's connection until it closes.
fn serve(stream: TcpStream, table: Table) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream)
        .lines()
        .map_while(std::result::Result::ok)
    {
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Set { key, value }) => {
                let (map, changed) = &*table;
                map.lock().expect("never poisoned").insert(key, value);
                changed.notify_all();
                Reply::Ok
            }
            Ok(Request::Get { key, timeout_ms }) => {
                let (map, changed) = &*table;
                let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                let mut guard = map.lock().expect("never poisoned");
                loop {
                    if let Some(value) = guard.get(&key) {
                        break Reply::Value(value.clone());
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Reply::Timeout;
                    }
                    guard = changed.wait_timeout(guard, left).expect("never poisoned").0;
                }
            }
            Err(_) => break,
        };
        let Ok(mut text) = serde_json::to_string(&reply) else {
            break;
        };
        text.push('\n');
        if writer.write_all(text.as_bytes()).is_err() {
            break;
        }
    }
}
