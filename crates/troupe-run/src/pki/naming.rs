//! Where a certificate's files live: named as `cfssljson -bare NAME` names them (the
//! seed's `server.pem`, `server-key.pem`, `server.csr`), or as kubeadm does
//! (`/etc/kubernetes/pki/etcd/server.crt`, `server.key`). A choice per task, so troupe
//! can take over either kind of existing layout without renaming files that manifests
//! already point at.

/// File naming convention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Naming {
    /// `NAME.pem`, `NAME-key.pem`, `NAME.csr`
    #[default]
    Cfssl,
    /// `NAME.crt`, `NAME.key`, `NAME.csr`
    Kubeadm,
}

impl Naming {
    pub const NAMES: &'static [&'static str] = &["cfssl", "kubeadm"];

    pub fn parse(s: &str) -> Option<Naming> {
        match s {
            "cfssl" => Some(Naming::Cfssl),
            "kubeadm" => Some(Naming::Kubeadm),
            _ => None,
        }
    }

    /// The three paths for `name` in `dir`.
    pub fn paths(self, dir: &str, name: &str) -> PkiPaths {
        let dir = dir.trim_end_matches('/');
        let dir = if dir.is_empty() { "/" } else { dir };
        let join = |file: String| {
            if dir == "/" {
                format!("/{file}")
            } else {
                format!("{dir}/{file}")
            }
        };
        match self {
            Naming::Cfssl => PkiPaths {
                cert: join(format!("{name}.pem")),
                key: join(format!("{name}-key.pem")),
                csr: join(format!("{name}.csr")),
            },
            Naming::Kubeadm => PkiPaths {
                cert: join(format!("{name}.crt")),
                key: join(format!("{name}.key")),
                csr: join(format!("{name}.csr")),
            },
        }
    }
}

/// The files of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    pub cert: String,
    pub key: String,
    pub csr: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_conventions() {
        let p = Naming::Cfssl.paths("/etc/kubernetes/pki/etcd-certs/", "peer1");
        assert_eq!(p.cert, "/etc/kubernetes/pki/etcd-certs/peer1.pem");
        assert_eq!(p.key, "/etc/kubernetes/pki/etcd-certs/peer1-key.pem");
        assert_eq!(p.csr, "/etc/kubernetes/pki/etcd-certs/peer1.csr");
        let p = Naming::Kubeadm.paths("/etc/kubernetes/pki/etcd", "server");
        assert_eq!(
            (p.cert.as_str(), p.key.as_str()),
            (
                "/etc/kubernetes/pki/etcd/server.crt",
                "/etc/kubernetes/pki/etcd/server.key"
            )
        );
    }
}
