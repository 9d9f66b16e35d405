//! Group commit: many concurrent requests' writes in one statement, one round trip and one
//! commit.
//!
//! On a small machine the cost of a write is mostly per statement, not per row: the round
//! trip (two context switches on each side), parse/bind/execute, and the commit's WAL flush.
//! A [`GroupCommit`] collects the requests that arrive while earlier groups are in flight and
//! hands them to one function as a slice, which writes them all with one set-based
//! statement (`… FROM unnest($1::text[], …)`). Under light load every request runs alone, as
//! fast as before (a group is dispatched as soon as a slot is free; nothing waits for
//! company); under load the groups grow by themselves, up to `max_group`.
//!
//! The contract that keeps this safe for money: a group function is only ever a **fast path**
//! in front of a single-request path that defines the behaviour. It answers, per request,
//! either "done" or "not done by the group"; the caller then takes the single path, which
//! decides everything unusual (conflicts, mismatches, errors) exactly as it would have
//! alone. A group that fails (a constraint, a deadlock, a lost connection) answers "not
//! done" for all of its requests, so one bad request cannot fail its neighbours, and a
//! statement whose commit outcome is unknown is resolved by the single path reading the
//! state it finds (every group statement is written to be idempotent for that reason).
//!
//! Plans. PostgreSQL caches the plan of a prepared statement, made from the tables'
//! statistics at the time, and keeps it until they change. A group statement that finds
//! its rows in `orders` by key gets, when planned while `orders` is nearly empty (a new
//! install, a benchmark's fresh database), a plan that scans the table instead of using its
//! unique index, and keeps it until autovacuum's next ANALYZE or VACUUM of the table (50
//! rows + 10 % changed, checked every `autovacuum_naptime`, one minute by default) replaces
//! it with the index plan for good (checked by hand: seq scan on an empty table, index scan
//! after 20,000 orders and a VACUUM). Every group statement is prepared all the same:
//! planning one costs about as much as executing it for a group of five (measured: the
//! notification statement +59 % notifications/s once prepared; the order path's
//! `UPDATE … FROM unnest(…)` statements planned 0.32 ms per execution), and a new install
//! does not receive thousands of requests a second in its first minute (a guess). The
//! order benchmark loads 100,000 earlier orders and analyzes them first for that reason
//! (without them, the cached plan halved orders/s: 1,737 → 1,232/s).
//!
//! Custom plans. For a prepared statement PostgreSQL compares the generic plan with plans
//! made for the actual arguments, and an array argument of three elements makes every
//! custom plan look cheaper than the generic one (costed for ten): the statement is then
//! planned on every execution. Connections that run group statements with join plans set
//! `plan_cache_mode = force_generic_plan` (the api's `pool_async`; see its docs).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

type Job<Req, Resp> = (Req, oneshot::Sender<Resp>);
type GroupFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Sizes of a [`GroupCommit`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most requests in one group (bounds one statement's size and lock set).
    pub max_group: usize,
    /// Groups executing at once (each holds one database connection while it runs).
    pub in_flight: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_group: 64, in_flight: 4 }
    }
}

/// A handle to a running group-commit dispatcher; cheap to clone. The dispatcher task ends
/// when the last handle is dropped, after finishing the groups in flight.
pub struct GroupCommit<Req, Resp> {
    tx: mpsc::Sender<Job<Req, Resp>>,
    name: &'static str,
}

impl<Req, Resp> Clone for GroupCommit<Req, Resp> {
    fn clone(&self) -> Self {
        GroupCommit { tx: self.tx.clone(), name: self.name }
    }
}

impl<Req, Resp> std::fmt::Debug for GroupCommit<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").field("name", &self.name).finish()
    }
}

/// Database connections a group function keeps between its groups. A connection taken
/// from the pool costs two round trips besides the statement (sqlx pings it when it is
/// taken and again when it is given back), and a dispatcher runs thousands of groups a
/// second; so each keeps the connections it used, at most one per group in flight. A group
/// that fails drops its connection (a broken one is never reused) and the next group takes
/// a fresh one from the pool.
pub struct Connections {
    pool: PgPool,
    idle: Mutex<Vec<PoolConnection<Postgres>>>,
}

impl Connections {
    pub fn new(pool: PgPool) -> Arc<Connections> {
        Arc::new(Connections { pool, idle: Mutex::new(Vec::new()) })
    }

    /// Runs `f` on a kept connection (or a new one from the pool), and keeps the connection
    /// when `f` succeeds.
    pub async fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut PgConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let kept = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut conn = match kept {
            Some(c) => c,
            None => self.pool.acquire().await?,
        };
        let result = f(&mut conn).await;
        if result.is_ok() {
            self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(conn);
        }
        result
    }
}

/// The dispatcher is gone (the runtime that ran it shut down): take the single path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl<Req: Send + 'static, Resp: Send + 'static> GroupCommit<Req, Resp> {
    /// Starts the dispatcher on the current Tokio runtime. `run` gets a group (never empty,
    /// at most `limits.max_group`) and must return exactly one answer per request, in order.
    ///
    /// # Panics
    /// Outside a Tokio runtime, or if `run` returns the wrong number of answers (a bug in the
    /// group function; the requests of that group then see [`Stopped`]).
    pub fn start<F, Fut>(name: &'static str, limits: Limits, run: F) -> GroupCommit<Req, Resp>
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let max_group = limits.max_group.max(1);
        let in_flight = limits.in_flight.max(1);
        let (tx, rx) = mpsc::channel(max_group * in_flight * 4);
        tokio::spawn(dispatch(name, rx, Arc::new(run), max_group, in_flight));
        GroupCommit { tx, name }
    }

    /// [`GroupCommit::start`] for a fallible group function: a group that fails is logged
    /// (as a warning: the single path still serves its requests) and every request in it is
    /// answered `fallback`, the answer that sends it to the single path.
    pub fn start_with_fallback<F, Fut, E>(name: &'static str, limits: Limits, fallback: Resp, run: F) -> Self
    where
        Resp: Clone + Sync,
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Resp>, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        GroupCommit::start(name, limits, move |reqs: Vec<Req>| {
            let size = reqs.len();
            let fallback = fallback.clone();
            let fut = run(reqs);
            async move {
                fut.await.unwrap_or_else(|e| {
                    tracing::warn!(group = name, size, error = %e, "group failed; its requests take the single path");
                    vec![fallback; size]
                })
            }
        })
    }

    /// Queues `req` for the next group and waits for its answer.
    pub async fn submit(&self, req: Req) -> Result<Resp, Stopped> {
        let (done, answer) = oneshot::channel();
        self.tx.send((req, done)).await.map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

async fn dispatch<Req, Resp, F, Fut>(
    name: &'static str,
    mut rx: mpsc::Receiver<Job<Req, Resp>>,
    run: Arc<F>,
    max_group: usize,
    in_flight: usize,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Resp>> + Send + 'static,
{
    let mut running: FuturesUnordered<GroupFuture> = FuturesUnordered::new();
    loop {
        if running.len() >= in_flight {
            running.next().await;
            continue;
        }
        tokio::select! {
            biased;
            Some(()) = running.next(), if !running.is_empty() => {}
            job = rx.recv() => {
                let Some(first) = job else { break };
                let mut group = vec![first];
                while group.len() < max_group {
                    match rx.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
                running.push(Box::pin(execute(name, group, run.clone())));
            }
        }
    }
    while running.next().await.is_some() {}
}

async fn execute<Req, Resp, F, Fut>(name: &'static str, group: Vec<Job<Req, Resp>>, run: Arc<F>)
where
    F: Fn(Vec<Req>) -> Fut,
    Fut: Future<Output = Vec<Resp>>,
{
    let size = group.len();
    let (reqs, waiters): (Vec<Req>, Vec<oneshot::Sender<Resp>>) = group.into_iter().unzip();
    let answers = run(reqs).await;
    if answers.len() != size {
        // Dropping the senders answers every request with `Stopped`: they take the single path.
        tracing::error!(group = name, size, answers = answers.len(), "group function answered the wrong number");
        return;
    }
    for (waiter, answer) in waiters.into_iter().zip(answers) {
        // A request whose caller went away (client disconnected) just drops its answer.
        let _ = waiter.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn groups_form_under_load_and_every_request_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let g = GroupCommit::start("test", Limits { max_group: 8, in_flight: 1 }, move |reqs: Vec<u32>| {
            seen.lock().unwrap().push(reqs.len());
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                reqs.into_iter().map(|r| r * 2).collect()
            }
        });
        let answers = futures::future::join_all((0..40u32).map(|i| {
            let g = g.clone();
            async move { (i, g.submit(i).await.unwrap()) }
        }))
        .await;
        for (i, a) in answers {
            assert_eq!(a, i * 2);
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|&s| (1..=8).contains(&s)), "{sizes:?}");
        assert!(sizes.len() < 40, "requests that waited were grouped: {sizes:?}");
    }

    #[tokio::test]
    async fn a_lone_request_does_not_wait_for_company() {
        let g = GroupCommit::start("test", Limits::default(), |reqs: Vec<u8>| async move { reqs });
        // No timer anywhere: a request alone is dispatched at once (a hang would time out).
        assert_eq!(tokio::time::timeout(Duration::from_secs(30), g.submit(7)).await, Ok(Ok(7)));
    }

    #[tokio::test]
    async fn a_wrong_number_of_answers_sends_everyone_to_the_single_path() {
        let g = GroupCommit::start("test", Limits::default(), |_reqs: Vec<u8>| async move { Vec::<u8>::new() });
        assert_eq!(g.submit(1).await, Err(Stopped));
    }

    #[tokio::test]
    async fn in_flight_groups_run_concurrently() {
        // Four groups of one that can only finish together: serial execution would hang.
        let barrier = Arc::new(tokio::sync::Barrier::new(4));
        let g = GroupCommit::start("test", Limits { max_group: 1, in_flight: 4 }, move |reqs: Vec<u8>| {
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                reqs
            }
        });
        let all =
            tokio::time::timeout(Duration::from_secs(30), futures::future::join_all((0..4u8).map(|i| g.submit(i))))
                .await
                .expect("the four groups ran side by side");
        assert_eq!(all, vec![Ok(0), Ok(1), Ok(2), Ok(3)]);
    }
}
