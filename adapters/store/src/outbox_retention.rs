//! Which published outbox rows pruning deletes: the retention rule both
//! stores apply to what they read of their outbox. A published row goes once
//! it is older than the age cutoff (`outbox_keep_ms`) **or** no longer among
//! the last `keep_published_rows` published; an unpublished row is never
//! deleted; one pruning deletes at most `max_rows` (a bounded transaction).

/// What a store read of its outbox, in sequence numbers (one row of
/// `crate::sql`'s outbox extent statement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutboxExtent {
    /// Every row with `seq <=` this is published.
    pub published_through: i64,
    /// The oldest row, if any.
    pub first_seq: Option<i64>,
    /// The first row written at or after the age cutoff, if any.
    pub first_recent_seq: Option<i64>,
}

/// How long published rows are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutboxRetention {
    /// Published rows beyond the last this many go, whatever their age.
    pub keep_published_rows: u64,
    /// At most this many rows are deleted per pruning.
    pub max_rows: u64,
}

impl OutboxExtent {
    /// The extent from the statement's columns: watermark, oldest row, first recent row.
    pub(crate) fn from_columns(
        (published_through, first_seq, first_recent_seq): (i64, Option<i64>, Option<i64>),
    ) -> Self {
        Self { published_through, first_seq, first_recent_seq }
    }
}

impl OutboxRetention {
    /// The last sequence number to delete (rows `first_seq..=through`), or
    /// `None` when nothing is due for deletion.
    pub(crate) fn prune_through(&self, extent: OutboxExtent) -> Option<i64> {
        let published = extent.published_through;
        let first = extent.first_seq.filter(|first| *first <= published)?;
        let keep_rows = i64::try_from(self.keep_published_rows).unwrap_or(i64::MAX);
        let max_rows = i64::try_from(self.max_rows).unwrap_or(i64::MAX);
        let too_old_through = extent.first_recent_seq.map_or(published, |seq| seq - 1);
        let too_many_through = published.saturating_sub(keep_rows);
        let through =
            too_old_through.max(too_many_through).min(published).min(first.saturating_add(max_rows - 1));
        (through >= first).then_some(through)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETAIN: OutboxRetention = OutboxRetention { keep_published_rows: 10, max_rows: 1_000 };

    fn extent(published_through: i64, first: Option<i64>, first_recent: Option<i64>) -> OutboxExtent {
        OutboxExtent { published_through, first_seq: first, first_recent_seq: first_recent }
    }

    #[test]
    fn an_empty_or_unpublished_outbox_is_left_alone() {
        assert_eq!(RETAIN.prune_through(extent(0, None, None)), None);
        assert_eq!(RETAIN.prune_through(extent(4, Some(5), None)), None);
    }

    #[test]
    fn old_published_rows_go_but_never_unpublished_ones() {
        // Rows 1..=100, published through 50, all older than the cutoff.
        assert_eq!(RETAIN.prune_through(extent(50, Some(1), None)), Some(50));
        // Rows from 30 on are recent, but only 41..=50 are among the last 10 published.
        assert_eq!(RETAIN.prune_through(extent(50, Some(1), Some(30))), Some(40));
    }

    #[test]
    fn young_rows_beyond_the_count_bound_go() {
        // Everything is recent, but only the last 10 published are kept.
        assert_eq!(RETAIN.prune_through(extent(50, Some(1), Some(1))), Some(40));
        // Fewer than 10 published: all kept.
        assert_eq!(RETAIN.prune_through(extent(8, Some(1), Some(1))), None);
    }

    #[test]
    fn one_pruning_deletes_at_most_max_rows() {
        let small = OutboxRetention { keep_published_rows: 0, max_rows: 7 };
        assert_eq!(small.prune_through(extent(100, Some(11), None)), Some(17));
        let none = OutboxRetention { keep_published_rows: 0, max_rows: 0 };
        assert_eq!(none.prune_through(extent(100, Some(11), None)), None);
    }
}
