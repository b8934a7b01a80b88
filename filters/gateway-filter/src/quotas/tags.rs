//! The worker's tags for its quota slots (a roomy request's holds travel by them, and its usage
//! comes back in the tally by them).

#[allow(clippy::wildcard_imports)]
use super::*;

thread_local! {
    /// The worker's tags for the quota slots it has been configured with (a slot's tag is its
    /// position here plus one): a roomy request's holds travel by them, and its usage comes back
    /// in the tally by them (see `tollgate_contract::quota::tally`). Kept while the worker runs,
    /// so that a request admitted under an earlier configuration is still counted; at most
    /// [`TAGS_MAX`].
    static TAGS: RefCell<Tags> = RefCell::default();
}

/// A quota slot's name: its quota's id and group, shared.
pub(super) type SlotName = (Rc<str>, Option<Rc<str>>);

/// The worker's tags (see `TAGS`): the slots' names by tag, and the tags by name (a
/// configuration of many quotas is tagged without comparing each with every other).
#[derive(Default)]
pub(super) struct Tags {
    pub(super) names: Vec<SlotName>,
    pub(super) by_name: std::collections::HashMap<(Box<str>, Option<Box<str>>), u32>,
}

/// The most quota slots a worker tags; a quota past them has none, and a request holding it
/// settles its usage in the slots (as when not roomy).
pub(super) const TAGS_MAX: usize = 1 << 16;

/// The worker's tag for the quota slot of `id` and `group`, and the two as the tags keep them
/// (shared): a new tag when it has none, 0 when it has no room for one.
pub(super) fn tag(id: &str, group: Option<&str>) -> (u32, Rc<str>, Option<Rc<str>>) {
    let made = || (0, Rc::from(id), group.map(Rc::from));
    TAGS.with(|t| {
        let Ok(mut t) = t.try_borrow_mut() else { return made() };
        let name = (Box::from(id), group.map(Box::from));
        let tag = match t.by_name.get(&name) {
            Some(&tag) => tag,
            None if t.names.len() < TAGS_MAX => {
                let (_, i, g) = made();
                t.names.push((i, g));
                let Ok(tag) = u32::try_from(t.names.len()) else { return made() };
                t.by_name.insert(name, tag);
                tag
            }
            None => return made(),
        };
        match usize::try_from(tag).ok().and_then(|n| t.names.get(n.checked_sub(1)?)) {
            Some((i, g)) => (tag, i.clone(), g.clone()),
            None => made(),
        }
    })
}

/// The quota slot tagged `tag` (see [`tag`]).
pub(super) fn tagged(tag: u32) -> Option<SlotName> {
    let at = usize::try_from(tag).ok()?.checked_sub(1)?;
    TAGS.with(|t| t.try_borrow().ok()?.names.get(at).cloned())
}
