//! What the cleanup's passes share: working through a due list, page by page.

use std::collections::{HashSet, VecDeque};

/// Items taken from a due list per Query, beyond those already seen this run.
const PAGE: i32 = 25;

/// A due list (ids, most overdue first), drained. Each page is a fresh Query, since the work
/// takes items off the list (done, or leased to later); an id comes out at most once a run,
/// and the page grows by the ids already seen, so ones still due (held by another run, or
/// failing) never hide the rest.
pub(crate) struct Due<L> {
    list: L,
    seen: HashSet<String>,
    page: VecDeque<String>,
    done: bool,
}

impl<L, Fut, E> Due<L>
where
    L: FnMut(i32) -> Fut,
    Fut: Future<Output = Result<Vec<String>, E>>,
{
    /// `list(limit)`: up to `limit` due ids.
    pub(crate) fn new(list: L) -> Self {
        Self { list, seen: HashSet::new(), page: VecDeque::new(), done: false }
    }

    /// The next due id not yet out this run; `None` once none is left. An `Err` (the list
    /// could not be read) ends it.
    pub(crate) async fn next(&mut self) -> Option<Result<String, E>> {
        if let Some(id) = self.page.pop_front() {
            return Some(Ok(id));
        }
        if self.done {
            return None;
        }
        let limit = PAGE.saturating_add(i32::try_from(self.seen.len()).unwrap_or(i32::MAX));
        match (self.list)(limit).await {
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
            Ok(ids) => {
                self.page = ids.into_iter().filter(|id| self.seen.insert(id.clone())).collect();
                self.done = self.page.is_empty();
                self.page.pop_front().map(Ok)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list where every id stays due after its work (as one another run holds does).
    #[tokio::test]
    async fn each_due_id_comes_out_once_and_ones_still_due_do_not_hide_the_rest() {
        let due: Vec<String> = (0..60).map(|i| format!("id-{i:02}")).collect();
        let mut queries = 0;
        let mut drained = Due::new(|limit| {
            queries += 1;
            std::future::ready(Ok::<_, ()>(due.iter().take(limit as usize).cloned().collect()))
        });
        let mut out = Vec::new();
        while let Some(id) = drained.next().await {
            out.push(id.unwrap());
        }
        drop(drained);
        assert_eq!(out, due, "every id once, in the list's order");
        assert_eq!(queries, 4, "pages of 25, 50, 75, then one with nothing new");
    }

    #[tokio::test]
    async fn a_list_that_cannot_be_read_ends_it() {
        let mut drained = Due::new(|_| std::future::ready(Err::<Vec<String>, _>("down")));
        assert!(matches!(drained.next().await, Some(Err("down"))));
        assert!(drained.next().await.is_none());
    }
}
