//! A TCP relay in front of a dependency (the Firestore or Pub/Sub emulator) that a test can cut:
//! an outage as its clients see one when Google's front ends restart or a zone drops. Open
//! connections are reset mid-request and new ones are refused until it is restored, while the
//! service's data survives, as Firestore's and Pub/Sub's does (restarting the emulators
//! themselves would lose every document and message, which the real services never do).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut: each relayed connection ends when it changes.
    generation: watch::Sender<u64>,
    refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays 127.0.0.1:(a free port) to `target` (`host:port`).
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        let target: SocketAddr = target.parse()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let (generation, _) = watch::channel(0u64);
        let task = tokio::spawn({
            let (cut, refused, generation) = (cut.clone(), refused.clone(), generation.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        reset(client);
                        continue;
                    }
                    let mut ended = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            reset(client);
                            return;
                        };
                        let mut client = client;
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = ended.changed() => {
                                reset(client);
                                reset(server);
                            }
                        }
                    });
                }
            }
        });
        Ok(Self {
            addr,
            cut,
            generation,
            refused,
            task,
        })
    }

    /// `127.0.0.1:port`, for `FIRESTORE_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Resets every open connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// How many connections were refused while cut: an outage nobody met tested nothing.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Closes `stream` with a reset, as a peer that went away does, not an orderly end.
fn reset(stream: TcpStream) {
    // Deprecated because a lingering close blocks the thread; a zero linger never waits.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(std::time::Duration::ZERO));
    drop(stream);
}
