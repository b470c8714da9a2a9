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

# nginx_hdr_server PORT: prints the `nginx-hdr` server block: proxy_pass to the `origin`
# upstream doing the header work sse-edge does on every passthrough request by default (a
# request id both ways, the forwarding headers, no version banner), what a like-for-like nginx
# front of an origin is configured with.
nginx_hdr_server() {
  sed "s/PORT/$1/" <<'CONF'
  server {
    listen 127.0.0.1:PORT backlog=4096;
    server_tokens off;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Request-Id $request_id;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header Forwarded "for=$remote_addr;host=$host;proto=$scheme";
      add_header X-Request-Id $request_id always;
    }
  }
CONF
}
