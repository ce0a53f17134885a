//! Keeping the operator's secrets: connection URLs (PostgreSQL, NATS; one or
//! a comma-separated list) lose their password or token — in the user-info
//! part and in query parameters — before they reach a log line or the
//! console; and the data directory (timers, deliveries, API key hashes,
//! signing keys) is readable by the server's user only: the directory 0700,
//! its database files 0600 (SQLite gives a database's WAL and shared-memory
//! files the database file's mode).

use std::path::Path;

/// The database files of a data directory.
const DATABASE_FILES: [&str; 2] = ["minoots.db", "actions.db"];

/// Creates `dir` if needed and makes it and its database files private
/// (existing ones included); database files that do not exist yet are
/// created empty with mode 0600, which SQLite then fills.
pub fn private_data_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        for name in DATABASE_FILES {
            let path = dir.join(name);
            std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(&path)?;
            for suffix in ["", "-wal", "-shm"] {
                let file = dir.join(format!("{name}{suffix}"));
                if file.exists() {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
                }
            }
        }
    }
    Ok(())
}

/// Query parameters whose values are credentials.
const SECRET_PARAMS: [&str; 4] = ["password", "sslpassword", "token", "pass"];

/// `urls` with every credential replaced by `***`.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = match head.find("://") {
        Some(scheme_end) => {
            let rest = &head[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => {
                    let user = match rest[..at].split_once(':') {
                        Some((user, _)) => format!("{user}:***"),
                        None => "***".to_owned(), // a bare token
                    };
                    format!("{}{user}{}", &head[..scheme_end + 3], &rest[at..])
                }
                None => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if SECRET_PARAMS.contains(&name.to_ascii_lowercase().as_str()) => {
                    format!("{name}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_data_directory_and_its_databases_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("data");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(dir.join("minoots.db-wal"), b"").expect("wal");
        std::fs::set_permissions(dir.join("minoots.db-wal"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        private_data_dir(&dir).expect("private");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for name in ["minoots.db", "actions.db", "minoots.db-wal"] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
    }

    #[test]
    fn passwords_and_tokens_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_urls("postgres://minoots:secret@db:5432/minoots"),
            "postgres://minoots:***@db:5432/minoots"
        );
        assert_eq!(
            redact_urls("postgres://db/minoots?user=m&password=secret&sslmode=require"),
            "postgres://db/minoots?user=m&password=***&sslmode=require"
        );
        assert_eq!(
            redact_urls("nats://user:pw@a:4222,nats://tok3n@b:4222"),
            "nats://user:***@a:4222,nats://***@b:4222"
        );
        assert_eq!(redact_urls("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_urls("postgres://db/x?a=b@c"), "postgres://db/x?a=b@c");
    }
}
