
mod connection;
mod etcd;
