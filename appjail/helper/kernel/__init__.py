"""The kernel's side of a jail: namespaces, links, addresses, launching, scopes, netlink."""
