//! The strings many cached tokens share, one copy each: the app names the config owns, and the
//! scopes users granted (most grant the same ones). Owned by the engine, not global, and bounded:
//! past [`MAX_SCOPES`] distinct scopes a rare one is kept by its users themselves.

use super::{Grant, Settings, TokenKey};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Distinct scope strings shared at most.
pub(crate) const MAX_SCOPES: usize = 1024;

/// See the [module docs](self).
#[derive(Default)]
pub(crate) struct Names {
    scopes: Mutex<HashSet<Arc<str>>>,
}

impl Names {
    /// `key` with its app name the config's copy (a store's record came with its own).
    pub(crate) fn key(&self, settings: &Settings, key: TokenKey) -> TokenKey {
        match settings.issuer.apps.get_key_value(&*key.app) {
            Some((name, _)) if !Arc::ptr_eq(name, &key.app) => key.with_app(Arc::clone(name)),
            _ => key,
        }
    }

    /// `grant` with its scope the shared copy.
    pub(crate) fn grant(&self, mut grant: Grant) -> Grant {
        grant.scope = self.scope(&grant.scope);
        grant
    }

    /// The shared copy of a scope string.
    fn scope(&self, s: &Arc<str>) -> Arc<str> {
        let mut set = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = set.get(&**s) {
            return Arc::clone(shared);
        }
        if set.len() < MAX_SCOPES {
            set.insert(Arc::clone(s));
        }
        Arc::clone(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_scopes_share_one_copy_up_to_the_bound() {
        let names = Names::default();
        let a: Arc<str> = Arc::from("user_info,video.list.bytes");
        let b: Arc<str> = Arc::from("user_info,video.list.bytes");
        assert!(Arc::ptr_eq(&names.scope(&a), &names.scope(&b)));
        for i in 0..MAX_SCOPES + 10 {
            names.scope(&Arc::from(format!("s{i}")));
        }
        assert_eq!(names.scopes.lock().unwrap().len(), MAX_SCOPES);
    }
}
