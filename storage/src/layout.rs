//! The data directory: one subdirectory per shard, named for the shard count, and re-sharding.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::log::{LogStore, Options};

/// The directory of shard `shard` of `shards` under `data_dir`: `shard-<shard>-of-<shards>`.
pub fn shard_dir(data_dir: &Path, shard: usize, shards: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard}-of-{shards}"))
}

fn reshard_dir(data_dir: &Path, from: usize, to: usize) -> PathBuf {
    data_dir.join(format!(".reshard-{from}-to-{to}"))
}

const COMPLETE: &str = "COMPLETE";

/// Why a data directory cannot be opened as it is. Carried inside the `io::Error` that
/// [`LogStore::open`] returns (`error.get_ref()` and `downcast_ref`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The data directory holds shards of another shard count.
    ShardCountMismatch {
        data_dir: PathBuf,
        /// The shard counts found (more than one only after an interrupted manual move).
        found: Vec<usize>,
        expected: usize,
    },
    /// A re-shard was interrupted; running it again finishes it.
    InterruptedReshard {
        data_dir: PathBuf,
        from: usize,
        to: usize,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::ShardCountMismatch {
                data_dir,
                found,
                expected,
            } => {
                let found_text = found
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" and ");
                let from = found.first().copied().unwrap_or(0);
                write!(
                    f,
                    "the data directory {} was written by {found_text} shards \
                     (shard-*-of-{from}), but this server runs {expected}. Actors are placed by \
                     shard count, so starting would orphan them. Either start with {from} \
                     shards, or move every actor to the {expected}-shard layout first: re-shard \
                     from {from} to {expected} (pinion_storage::reshard(data_dir, {from}, \
                     {expected}, place)). Nothing was changed",
                    data_dir.display()
                )
            }
            LayoutError::InterruptedReshard { data_dir, from, to } => write!(
                f,
                "the data directory {} holds an interrupted re-shard from {from} to {to} shards \
                 (.reshard-{from}-to-{to}). Run the same re-shard again (pinion_storage::reshard(\
                 data_dir, {from}, {to}, place)) to finish it before starting",
                data_dir.display()
            ),
        }
    }
}

impl std::error::Error for LayoutError {}

fn parse_shard_dir(name: &str) -> Option<(usize, usize)> {
    let (shard, shards) = name.strip_prefix("shard-")?.split_once("-of-")?;
    Some((shard.parse().ok()?, shards.parse().ok()?))
}

fn parse_reshard_dir(name: &str) -> Option<(usize, usize)> {
    let (from, to) = name.strip_prefix(".reshard-")?.split_once("-to-")?;
    Some((from.parse().ok()?, to.parse().ok()?))
}

struct Found {
    counts: Vec<usize>,
    reshard: Option<(usize, usize)>,
}

fn scan(data_dir: &Path) -> io::Result<Found> {
    let mut found = Found {
        counts: Vec::new(),
        reshard: None,
    };
    let entries = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((_, shards)) = parse_shard_dir(name) {
            if !found.counts.contains(&shards) {
                found.counts.push(shards);
            }
        } else if let Some(pair) = parse_reshard_dir(name) {
            found.reshard = Some(pair);
        }
    }
    found.counts.sort_unstable();
    Ok(found)
}

/// Fails unless `data_dir` is empty or laid out for `shards` shards.
pub(crate) fn check(data_dir: &Path, shards: usize) -> io::Result<()> {
    let found = scan(data_dir)?;
    if let Some((from, to)) = found.reshard {
        return Err(io::Error::other(LayoutError::InterruptedReshard {
            data_dir: data_dir.to_owned(),
            from,
            to,
        }));
    }
    if found.counts.iter().any(|&n| n != shards) {
        return Err(io::Error::other(LayoutError::ShardCountMismatch {
            data_dir: data_dir.to_owned(),
            found: found.counts.into_iter().filter(|&n| n != shards).collect(),
            expected: shards,
        }));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` (and missing parents), and syncs the parent of each directory it created so the
/// new names survive a crash.
pub(crate) fn create_dir_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.is_dir() {
        missing.push(at.to_owned());
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    for created in missing {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        sync_dir(&parent)?;
    }
    Ok(())
}

/// What a re-shard did.
#[derive(Clone, Debug, Default)]
pub struct ReshardReport {
    pub from: usize,
    pub to: usize,
    /// Live records copied (directory records, states, schedules, meta).
    pub records: u64,
    pub elapsed: Duration,
}

/// Moves every actor of `data_dir` from the `from`-shard layout to the `to`-shard layout:
/// `place(actor id)` names the new shard (the runtime's placement, jump hashing on the id).
///
/// Run it with the server stopped, inside a glommio executor (or use [`reshard_blocking`]). It
/// reads every old shard's live records (recovering each as a start would) and writes them into
/// new shard directories under `data_dir/.reshard-<from>-to-<to>/`; once all are durable it
/// marks that directory complete, renames the new shard directories into place, and removes the
/// old ones. Interrupted at any point, it can be run again: before the mark it starts over, after
/// it finishes the move. [`LogStore::open`] refuses a data directory with an unfinished re-shard.
pub async fn reshard(
    data_dir: &Path,
    from: usize,
    to: usize,
    place: &dyn Fn(u64) -> usize,
) -> io::Result<ReshardReport> {
    if from == 0 || to == 0 || from == to {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot re-shard from {from} to {to} shards"),
        ));
    }
    let started = Instant::now();
    let tmp = reshard_dir(data_dir, from, to);
    let found = scan(data_dir)?;
    if let Some(pair) = found.reshard
        && pair != (from, to)
    {
        return Err(io::Error::other(LayoutError::InterruptedReshard {
            data_dir: data_dir.to_owned(),
            from: pair.0,
            to: pair.1,
        }));
    }
    let mut records = 0;
    if !tmp.join(COMPLETE).exists() {
        if found.counts.iter().any(|&n| n != from) {
            return Err(io::Error::other(format!(
                "cannot re-shard {} from {from} shards: it holds shard-*-of-{:?} directories",
                data_dir.display(),
                found.counts
            )));
        }
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        create_dir_durable(&tmp)?;
        let options = Options {
            compaction: false,
            ..Options::default()
        };
        let mut targets = Vec::with_capacity(to);
        for shard in 0..to {
            let dir = shard_dir(&tmp, shard, to);
            create_dir_durable(&dir)?;
            targets.push(LogStore::open_dir(dir, shard, to, options.clone()).await?);
        }
        let checked_place = |id: u64| {
            let shard = place(id);
            assert!(shard < to, "place({id:#x}) = {shard}, not below {to}");
            shard
        };
        for shard in 0..from {
            let dir = shard_dir(data_dir, shard, from);
            if !dir.is_dir() {
                continue;
            }
            let source = LogStore::open_dir(dir, shard, from, options.clone()).await?;
            records += source.copy_live_into(&targets, &checked_place).await?;
            source.close().await?;
        }
        for target in targets {
            target.close().await?;
        }
        let mark = tmp.join(COMPLETE);
        std::fs::write(&mark, format!("{from} {to}\n"))?;
        std::fs::File::open(&mark)?.sync_all()?;
        sync_dir(&tmp)?;
    }
    for shard in 0..to {
        let staged = shard_dir(&tmp, shard, to);
        if staged.is_dir() {
            std::fs::rename(&staged, shard_dir(data_dir, shard, to))?;
        }
    }
    sync_dir(data_dir)?;
    for shard in 0..from {
        let old = shard_dir(data_dir, shard, from);
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
    }
    sync_dir(data_dir)?;
    std::fs::remove_dir_all(&tmp)?;
    sync_dir(data_dir)?;
    Ok(ReshardReport {
        from,
        to,
        records,
        elapsed: started.elapsed(),
    })
}

/// [`reshard`] on a glommio executor of its own (a new thread), for tools that have none.
pub fn reshard_blocking(
    data_dir: PathBuf,
    from: usize,
    to: usize,
    place: impl Fn(u64) -> usize + Send + 'static,
) -> io::Result<ReshardReport> {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("pinion-reshard")
        .spawn(move || async move { reshard(&data_dir, from, to, &place).await })
        .map_err(|error| io::Error::other(error.to_string()))?;
    executor
        .join()
        .map_err(|error| io::Error::other(error.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_shard_dir("shard-3-of-8"), Some((3, 8)));
        assert_eq!(parse_shard_dir("shard-3-of-"), None);
        assert_eq!(parse_reshard_dir(".reshard-2-to-4"), Some((2, 4)));
        assert_eq!(
            shard_dir(Path::new("/d"), 1, 2),
            PathBuf::from("/d/shard-1-of-2")
        );
    }
}
