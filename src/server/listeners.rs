//! The sockets a server listens on: TCP addresses it binds, unix socket paths it creates (and
//! removes when it stops), and listening sockets handed over by descriptor (a supervisor's,
//! systemd's socket activation, `--fd`), TCP or unix alike.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::config::Config;
use crate::error::StartError;

const BACKLOG: i32 = 1024;

/// A unix socket is made reachable by every local user, as a loopback port is: the directory
/// it is in decides who may reach it (nginx's user, say).
const UNIX_MODE: u32 = 0o666;

/// Where a server listens, as the embedding API and the start line name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

pub enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl StdListener {
    /// The TCP port, for a TCP listener.
    pub fn port(&self) -> Option<u16> {
        match self {
            StdListener::Tcp(l) => l.local_addr().ok().map(|a| a.port()),
            StdListener::Unix(_) => None,
        }
    }
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    pub fn from_std(l: StdListener) -> io::Result<(Listener, Bound)> {
        Ok(match l {
            StdListener::Tcp(l) => {
                let l = TcpListener::from_std(l)?;
                let at = l.local_addr()?;
                (Listener::Tcp(l), Bound::Tcp(at))
            }
            StdListener::Unix(l) => {
                let l = UnixListener::from_std(l)?;
                let at = l
                    .local_addr()?
                    .as_pathname()
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                (Listener::Unix(l), Bound::Unix(at))
            }
        })
    }

    /// The next connection, and the peer's address: a unix socket's peer is on this machine,
    /// and counts as 127.0.0.1 (so the default trusted proxies include a local nginx).
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), peer))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), SocketAddr::from(([127, 0, 0, 1], 0))))
            }
        }
    }
}

pub fn listen_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    tcp_listener(addr, false)
}

fn tcp_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(reuse_port)?;
    if addr.is_ipv6() {
        // One socket per family keeps `--bind [::]:80 --bind 0.0.0.0:80` from colliding.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Listeners every worker of a server binds for itself (the redirect listeners): with
/// SO_REUSEPORT, so that the workers, and a new set of them during a reload, share the port.
pub fn open_shared(addrs: &[SocketAddr]) -> Result<Vec<StdListener>, StartError> {
    let mut listeners = Vec::new();
    for addr in addrs {
        let l = tcp_listener(*addr, true).map_err(|source| StartError::Listen {
            addr: addr.to_string(),
            source,
        })?;
        listeners.push(StdListener::Tcp(l));
    }
    Ok(listeners)
}

/// Creates the socket file at `path`. A file left there by a server that died is replaced;
/// one a live server still answers on is in use, and anything but a socket is left alone.
pub fn listen_unix(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is there",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EADDRINUSE));
        }
        std::fs::remove_file(path)?;
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(UNIX_MODE))?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    // SAFETY: the descriptor is a unix stream socket this function owns.
    Ok(unsafe { std::os::unix::net::UnixListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Takes a listening socket another process opened; our copy is a dup, so closing it leaves
/// the others listening.
pub fn adopt(fd: i32) -> io::Result<StdListener> {
    // SAFETY: dup returns a new descriptor we own, or -1 which is checked before use.
    let own = unsafe { libc::dup(fd) };
    if own < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `own` is a fresh descriptor owned by nobody else.
    let socket = unsafe { Socket::from_raw_fd(own) };
    if socket.r#type()? != Type::STREAM || !is_listening(&socket)? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a listening stream socket",
        ));
    }
    socket.set_nonblocking(true)?;
    let unix = socket.local_addr()?.as_socket().is_none();
    Ok(if unix {
        // SAFETY: a unix stream socket, listening, owned here.
        StdListener::Unix(unsafe {
            std::os::unix::net::UnixListener::from_raw_fd(socket.into_raw_fd())
        })
    } else {
        StdListener::Tcp(socket.into())
    })
}

fn is_listening(socket: &Socket) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid descriptor, and an int-sized buffer with its length.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut on as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(on != 0)
}

/// Every socket the config asks for, and the socket files this server created.
pub fn open(config: &Config) -> Result<(Vec<StdListener>, Vec<PathBuf>), StartError> {
    let mut listeners = Vec::new();
    for addr in &config.binds {
        let l = listen_tcp(*addr).map_err(|source| StartError::Listen {
            addr: addr.to_string(),
            source,
        })?;
        listeners.push(StdListener::Tcp(l));
    }
    let mut created = Vec::new();
    let opened = (|| {
        for path in &config.unix_binds {
            let l = listen_unix(path).map_err(|source| StartError::Listen {
                addr: format!("unix:{}", path.display()),
                source,
            })?;
            listeners.push(StdListener::Unix(l));
            created.push(path.clone());
        }
        for fd in &config.listen_fds {
            listeners.push(adopt(*fd).map_err(|source| StartError::Fd { fd: *fd, source })?);
        }
        Ok(())
    })();
    if let Err(e) = opened {
        // A server that does not start leaves no socket file behind.
        for path in &created {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    Ok((listeners, created))
}
