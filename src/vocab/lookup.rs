//! A [`TokenKey`] looked up from borrowed parts ([`KeyRef`]), so a cache hit builds nothing: a
//! map keyed by `TokenKey` finds a `KeyRef` through `Borrow<dyn Lookup>` (the trait-object trick
//! `Borrow` allows), which hashes and compares the same bytes the owned key does. A biz key's
//! stored subject is `open_id\nscope`; its `KeyRef` keeps the two apart, so a key is hashed as
//! one byte stream (app, class, subject, length) cut into fixed chunks whatever pieces it comes
//! in: any hasher, not only one that streams, gives both forms the same hash, and a usual key is
//! one write to it (SipHash pays per write: five writes, as a derived `Hash` makes, cost twice
//! as much).

use super::{TokenClass, TokenKey};
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A user, biz or merchant app's token key by its parts, borrowed from the request: what a cache lookup needs,
/// without the allocation of a [`TokenKey`]'s subject.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    app: &'a str,
    class: TokenClass,
    /// The subject, or its part before the `\n` when `scope` is set.
    head: &'a str,
    scope: Option<&'a str>,
}

impl<'a> KeyRef<'a> {
    /// [`TokenKey::user`]'s parts.
    pub fn user(app: &'a str, open_id: &'a str) -> Self {
        KeyRef {
            app,
            class: TokenClass::User,
            head: open_id,
            scope: None,
        }
    }

    /// [`TokenKey::biz`]'s parts.
    pub fn biz(app: &'a str, open_id: &'a str, scope: &'a str) -> Self {
        KeyRef {
            app,
            class: TokenClass::Biz,
            head: open_id,
            scope: Some(scope),
        }
    }

    /// [`TokenKey::authorizer`]'s parts (`provider`: the `[[providers]]` name).
    pub fn authorizer(provider: &'a str, authorizer_appid: &'a str) -> Self {
        KeyRef {
            app: provider,
            class: TokenClass::Authorizer,
            head: authorizer_appid,
            scope: None,
        }
    }

    /// The app's name.
    pub fn app(&self) -> &'a str {
        self.app
    }

    /// The owned key (one allocation, its subject's), under `app`, the config's copy of this
    /// key's app name.
    pub fn to_key(&self, app: Arc<str>) -> TokenKey {
        debug_assert_eq!(*app, *self.app);
        match self.scope {
            Some(scope) => TokenKey::biz(app, self.head, scope),
            None => TokenKey::stored(app, self.class, self.head),
        }
    }
}

impl TokenKey {
    fn parts(&self) -> KeyRef<'_> {
        KeyRef {
            app: &self.app,
            class: self.class,
            head: &self.subject,
            scope: None,
        }
    }
}

/// A key, owned or borrowed, as a map keyed by [`TokenKey`] can look it up
/// (`map.get(&key_ref as &dyn Lookup)`).
pub trait Lookup {
    /// The key's parts.
    fn parts(&self) -> KeyRef<'_>;
}

impl Lookup for TokenKey {
    fn parts(&self) -> KeyRef<'_> {
        TokenKey::parts(self)
    }
}

impl Lookup for KeyRef<'_> {
    fn parts(&self) -> KeyRef<'_> {
        *self
    }
}

impl<'a> Borrow<dyn Lookup + 'a> for TokenKey {
    fn borrow(&self) -> &(dyn Lookup + 'a) {
        self
    }
}

impl Hash for dyn Lookup + '_ {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state)
    }
}

impl PartialEq for dyn Lookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn Lookup + '_ {}

/// Hashed as [`TokenKey`] is, by the same function: `Borrow` asks that the two agree.
impl Hash for TokenKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state)
    }
}

impl Hash for KeyRef<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut bytes = Chunks::new(state);
        // 0xff never occurs in UTF-8: it ends the app's name.
        bytes.push(self.app.as_bytes());
        bytes.push(&[0xff, self.class as u8]);
        bytes.push(self.head.as_bytes());
        if let Some(scope) = self.scope {
            bytes.push(b"\n");
            bytes.push(scope.as_bytes());
        }
        bytes.finish();
    }
}

/// Equal when the owned keys would be: the same app, class and subject bytes.
impl PartialEq for KeyRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.app == other.app && self.class == other.class && same_subject(self, other)
    }
}

impl Eq for KeyRef<'_> {}

fn same_subject(a: &KeyRef<'_>, b: &KeyRef<'_>) -> bool {
    match (a.scope, b.scope) {
        (None, None) => a.head == b.head,
        (Some(scope), None) => joins(b.head, a.head, scope),
        (None, Some(scope)) => joins(a.head, b.head, scope),
        (Some(_), Some(_)) => subject_bytes(a).eq(subject_bytes(b)),
    }
}

/// Whether `joined` is `open_id\nscope`.
fn joins(joined: &str, open_id: &str, scope: &str) -> bool {
    let (j, o) = (joined.as_bytes(), open_id.as_bytes());
    j.len() == o.len() + 1 + scope.len() && j.starts_with(o) && j[o.len()] == b'\n' && j.ends_with(scope.as_bytes())
}

fn subject_bytes<'a>(k: &KeyRef<'a>) -> impl Iterator<Item = u8> + 'a {
    let tail = k.scope.map(|s| b"\n".iter().chain(s.as_bytes())).into_iter().flatten();
    k.head.bytes().chain(tail.copied())
}

/// Bytes per write to the hasher: a user's key (an open_id is about 40 bytes) in one.
const CHUNK: usize = 96;

/// Bytes written to a hasher in chunks of [`CHUNK`] whatever pieces they come in, ended by
/// their count (so no key's bytes hash as another's prefix).
struct Chunks<'h, H> {
    state: &'h mut H,
    buf: [u8; CHUNK],
    used: usize,
    total: usize,
}

impl<'h, H: Hasher> Chunks<'h, H> {
    #[inline]
    fn new(state: &'h mut H) -> Self {
        Chunks {
            state,
            buf: [0; CHUNK],
            used: 0,
            total: 0,
        }
    }

    #[inline]
    fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len();
        while !bytes.is_empty() {
            let n = bytes.len().min(CHUNK - self.used);
            self.buf[self.used..self.used + n].copy_from_slice(&bytes[..n]);
            self.used += n;
            bytes = &bytes[n..];
            if self.used == CHUNK {
                self.state.write(&self.buf);
                self.used = 0;
            }
        }
    }

    #[inline]
    fn finish(mut self) {
        let total = self.total as u64;
        self.push(&total.to_le_bytes());
        self.state.write(&self.buf[..self.used]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    /// Odd subjects: empty, non-ASCII, a newline inside, longer than a chunk, a chunk exactly.
    const ODD: [&str; 7] = [
        "",
        "ou_1",
        "é\u{1F600}",
        "a\nb",
        "\n",
        "ou_0123456789abcdef0123456789abcdefXYZ",
        "0123456789abcdef0123456789abcdef",
    ];

    fn hash(b: &impl BuildHasher, k: &dyn Lookup) -> u64 {
        b.hash_one(k)
    }

    /// A hasher that keeps each write apart, as a hasher that does not stream may: the two forms
    /// must make the same writes, not only the same bytes.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Hasher for Writes {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.push(bytes.to_vec());
        }
    }

    fn writes(k: &dyn Lookup) -> Vec<Vec<u8>> {
        let mut w = Writes::default();
        k.hash(&mut w);
        w.0
    }

    #[test]
    fn a_borrowed_key_finds_exactly_what_the_owned_key_finds() {
        let mut owned = Vec::new();
        for app in ["main", "mäin"] {
            for o in ODD {
                owned.push(TokenKey::user(app.into(), o));
                for s in ODD {
                    owned.push(TokenKey::biz(app.into(), o, s));
                }
            }
        }
        let map: HashMap<TokenKey, usize> = owned.iter().cloned().enumerate().map(|(i, k)| (k, i)).collect();
        let b = map.hasher();
        for app in ["main", "mäin", "mai", ""] {
            for o in ODD {
                let user = KeyRef::user(app, o);
                let want = TokenKey::user(app.into(), o);
                assert_eq!(hash(b, &user), hash(b, &want), "user {app:?} {o:?}");
                assert_eq!(writes(&user), writes(&want), "user {app:?} {o:?}");
                assert_eq!(map.get(&user as &dyn Lookup), map.get(&want), "user {app:?} {o:?}");
                assert_eq!(user.to_key(app.into()), want);
                for s in ODD {
                    let biz = KeyRef::biz(app, o, s);
                    let want = TokenKey::biz(app.into(), o, s);
                    assert_eq!(hash(b, &biz), hash(b, &want), "biz {app:?} {o:?} {s:?}");
                    assert_eq!(writes(&biz), writes(&want), "biz {app:?} {o:?} {s:?}");
                    assert_eq!(map.get(&biz as &dyn Lookup), map.get(&want), "biz {app:?} {o:?} {s:?}");
                    assert_eq!(biz.to_key(app.into()), want);
                    // Never the user key of the same subject, nor another class's.
                    let found = map.get(&biz as &dyn Lookup).map(|&i| &owned[i]);
                    assert!(found.is_none_or(|k| k.class == TokenClass::Biz && k.subject() == format!("{o}\n{s}")));
                }
                let found = map.get(&user as &dyn Lookup).map(|&i| &owned[i]);
                assert!(found.is_none_or(|k| k.class == TokenClass::User && k.subject() == o));
            }
        }
        // A merchant app's key: found from its parts, never a user key of the same subject.
        let merchant = TokenKey::authorizer("main".into(), "tt_m1");
        let merchants: HashMap<TokenKey, usize> = [(merchant.clone(), 7)].into_iter().collect();
        let parts = KeyRef::authorizer("main", "tt_m1");
        assert_eq!(hash(merchants.hasher(), &parts), hash(merchants.hasher(), &merchant));
        assert_eq!(merchants.get(&parts as &dyn Lookup), Some(&7));
        assert_eq!(parts.to_key("main".into()), merchant);
        assert_eq!(merchants.get(&KeyRef::user("main", "tt_m1") as &dyn Lookup), None);
        // Every owned key is found from its parts (the loop above finds misses as well).
        for k in &owned {
            let parts = match k.class {
                TokenClass::User => KeyRef::user(&k.app, k.subject()),
                _ => {
                    let (o, s) = k.subject().split_once('\n').unwrap();
                    KeyRef::biz(&k.app, o, s)
                }
            };
            let found = map.get(&parts as &dyn Lookup);
            assert!(found.is_some() && found == map.get(k), "{k:?}");
        }
        // The stored form is ambiguous where an open_id holds a newline: "a\nb" + "c" is "a" + "b\nc".
        let ambiguous = map.get(&KeyRef::biz("main", "a", "b\n") as &dyn Lookup);
        assert!(ambiguous.is_some() && ambiguous == map.get(&TokenKey::biz("main".into(), "a\nb", "")));
        assert!(map.contains_key(&KeyRef::user("main", "a\nb") as &dyn Lookup));
        assert!(!map.contains_key(&KeyRef::user("main", "zz") as &dyn Lookup));
    }
}
