
mod connection;
mod etcd;
mod pki;
