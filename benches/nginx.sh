# Sourced by the bench scripts that run nginx + Nchan as a peer.

# nginx_conf DIR: writes DIR/nginx.conf from the server blocks (and upstreams) read on stdin:
# Nchan loaded, 2 workers sized like the proxy's limits, every file nginx writes under DIR.
nginx_conf() {
  mkdir -p "$1/tmp"
  {
    cat <<CONF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 2;
worker_rlimit_nofile 20000;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path $1/tmp;
  proxy_temp_path $1/tmp;
  fastcgi_temp_path $1/tmp;
  uwsgi_temp_path $1/tmp;
  scgi_temp_path $1/tmp;
CONF
    cat
    echo "}"
  } > "$1/nginx.conf"
}
