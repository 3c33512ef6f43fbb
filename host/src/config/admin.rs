//! The `[admin]` table: where a run serves its metrics, status, dashboard and probes.

use std::net::SocketAddr;

/// Where the admin server listens unless told otherwise: this machine only.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9464";

/// The pipeline file's `[admin]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminConfig {
    /// `None`: no admin server (`listen = false`).
    pub listen: Option<SocketAddr>,
    /// Whether the address was given (in the file or with `--admin`) rather than the default:
    /// a default address already taken (a second run on the machine) is a warning, a given one
    /// an error.
    pub explicit: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(DEFAULT_ADMIN.parse().expect("a socket address")),
            explicit: false,
        }
    }
}

impl<'de> serde::Deserialize<'de> for AdminConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            listen: Option<Listen>,
        }
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Listen {
            Off(bool),
            At(String),
        }
        let table = Table::deserialize(d)?;
        match table.listen {
            None | Some(Listen::Off(true)) => Ok(AdminConfig::default()),
            Some(Listen::Off(false)) => Ok(AdminConfig {
                listen: None,
                explicit: true,
            }),
            Some(Listen::At(at)) => Ok(AdminConfig {
                listen: Some(parse_listen(&at).map_err(serde::de::Error::custom)?),
                explicit: true,
            }),
        }
    }
}

/// `HOST:PORT` (port 0 picks a free one), as `listen` and `--admin` take it.
pub fn parse_listen(at: &str) -> Result<SocketAddr, String> {
    at.parse().map_err(|_| {
        format!("`{at}` is not an address to listen on: write it as HOST:PORT, e.g. \"{DEFAULT_ADMIN}\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AdminConfig, toml::de::Error> {
        #[derive(serde::Deserialize)]
        struct F {
            admin: AdminConfig,
        }
        toml::from_str::<F>(text).map(|f| f.admin)
    }

    #[test]
    fn listen_takes_an_address_or_false() {
        assert_eq!(parse("[admin]").unwrap(), AdminConfig::default());
        let off = parse("[admin]\nlisten = false").unwrap();
        assert_eq!(off.listen, None);
        let any = parse("[admin]\nlisten = \"0.0.0.0:0\"").unwrap();
        assert_eq!(any.listen.unwrap().to_string(), "0.0.0.0:0");
        assert!(any.explicit);
        let wrong = parse("[admin]\nlisten = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("HOST:PORT"), "{wrong}");
    }
}
