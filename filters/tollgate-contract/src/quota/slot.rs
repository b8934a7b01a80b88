//! A quota's count in shared data ([`Slot`]) and the values that hold a group's slots.

/// The slots of one shared-data value, by quota id: `[id length (1 byte), id, slot]` for each
/// quota of the group (one for a quota alone); a slot is [`SLOT_BYTES`] bytes.
pub fn decode_slots(bytes: &[u8]) -> Option<Vec<(String, Slot)>> {
    let mut b = bytes;
    let mut out = Vec::new();
    while let Some((&n, rest)) = b.split_first() {
        let n = usize::from(n);
        let id = std::str::from_utf8(rest.get(..n)?).ok()?.to_owned();
        let slot = Slot::decode(rest.get(n..n + SLOT_BYTES)?)?;
        out.push((id, slot));
        b = rest.get(n + SLOT_BYTES..)?;
    }
    Some(out)
}

/// The inverse of [`decode_slots`]; an id longer than 255 bytes is left out.
pub fn encode_slots(slots: &[(String, Slot)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(slots.iter().map(|(id, _)| 1 + id.len() + SLOT_BYTES).sum());
    for (id, slot) in slots {
        let Ok(n) = u8::try_from(id.len()) else { continue };
        out.push(n);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&slot.encode());
    }
    out
}

/// A quota's count in shared data: the window it is for, what was used in it (reservations
/// included) and, for a leased quota, what this Envoy holds of it and what the authority had
/// left to grant when it last answered.
///
/// Reservations (a request's worst-case tokens or cost, its concurrency slot) also count in
/// `held`, by the reservation epoch they were made in ([`Slot::roll`]): a reservation that is
/// never given back (its worker's VM crashed mid-request) expires with its epoch, so it cannot
/// leak, while one given back in time is taken off exactly once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    pub window: u64,
    pub used: u64,
    pub leased: u64,
    pub free: u64,
    /// The latest reservation epoch this slot has seen.
    pub epoch: u64,
    /// Reservations still held, by epoch parity: `held[epoch % 2]` for `epoch` and
    /// `epoch - 1`.
    pub held: [u64; 2],
}

/// The encoded size of a [`Slot`].
pub const SLOT_BYTES: usize = 56;

/// The reservation epoch of `now` (Unix seconds) for reservations that expire after
/// `hold_seconds` (the gateway's longest request): a reservation of epoch `e` is dropped when the
/// slot reaches epoch `e + 2`, at least `hold_seconds` later.
pub fn hold_epoch(now: u64, hold_seconds: u64) -> u64 {
    now / hold_seconds.max(1)
}

impl Slot {
    pub fn new(window: u64) -> Self {
        Self { window, ..Self::default() }
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != SLOT_BYTES {
            return None;
        }
        let at = |i: usize| bytes.get(i * 8..i * 8 + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        Some(Self { window: at(0)?, used: at(1)?, leased: at(2)?, free: at(3)?, epoch: at(4)?, held: [at(5)?, at(6)?] })
    }

    pub fn encode(&self) -> [u8; SLOT_BYTES] {
        let mut out = [0u8; SLOT_BYTES];
        let fields = [self.window, self.used, self.leased, self.free, self.epoch, self.held[0], self.held[1]];
        for (chunk, v) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The slot as seen in `window`: a slot of an earlier window counts nothing any more.
    pub fn in_window(self, window: u64) -> Self {
        if self.window == window {
            self
        } else {
            Self::new(window)
        }
    }

    /// What is left of this Envoy's lease.
    pub fn spare(&self) -> u64 {
        self.leased.saturating_sub(self.used)
    }

    /// What is left of the quota as this slot sees it, for the rate-limit headers and whether a
    /// quota is roomy: of a leased quota, what the authority had left plus what this Envoy
    /// holds unspent; else the limit less what is used.
    pub fn left(&self, lease: bool, limit: u64) -> u64 {
        if lease {
            self.free.saturating_add(self.spare()).min(limit)
        } else {
            limit.saturating_sub(self.used)
        }
    }

    /// Moves the slot on to reservation epoch `epoch`: the reservations of epochs before
    /// `epoch - 1` still held expire (they stop counting in `used`). Returns what expired.
    pub fn roll(&mut self, epoch: u64) -> u64 {
        if epoch <= self.epoch {
            return 0;
        }
        let parity = |e: u64| usize::from(e % 2 == 1);
        let expired = if epoch - self.epoch == 1 {
            // The bucket `epoch` takes over held `epoch - 2`.
            std::mem::take(&mut self.held[parity(epoch)])
        } else {
            std::mem::take(&mut self.held[0]).saturating_add(std::mem::take(&mut self.held[1]))
        };
        self.used = self.used.saturating_sub(expired);
        self.epoch = epoch;
        expired
    }

    /// Records a reservation of `amount` (already added to `used`) made in epoch `epoch` (the
    /// slot's, after [`Slot::roll`]).
    pub fn hold(&mut self, epoch: u64, amount: u64) {
        if let Some(h) = self.held.get_mut(usize::from(epoch % 2 == 1)) {
            *h = h.saturating_add(amount);
        }
    }

    /// Gives back a reservation of `amount` made in epoch `epoch`: taken off `used` unless it
    /// has expired (then it already was). Returns what was given back.
    pub fn unhold(&mut self, epoch: u64, amount: u64) -> u64 {
        if epoch > self.epoch || self.epoch - epoch > 1 {
            return 0;
        }
        let Some(h) = self.held.get_mut(usize::from(epoch % 2 == 1)) else { return 0 };
        let back = amount.min(*h);
        *h -= back;
        self.used = self.used.saturating_sub(back);
        back
    }
}
