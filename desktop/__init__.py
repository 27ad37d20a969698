"""appjail-tray: the Qt tray app (installed as the package appjail.desktop)."""
