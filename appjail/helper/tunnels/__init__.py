"""A jail's own tunnels: WireGuard (wireguard-go) and OpenVPN, their unprivileged daemons."""
