module bridgemigration.local/lab/dhcpd

go 1.19

require (
	github.com/krolaw/dhcp4 v0.0.0-20180925202202-7cead472c414
	golang.org/x/net v0.33.0
)

require golang.org/x/sys v0.28.0 // indirect
