# shellcheck shell=bash
# What the gateway benchmarks share, sourced by run.sh, cpu.sh and ab.sh so
# all measure the same setups: free ports, waiting for a port, the nginx
# backends' configuration, and the proxies' configurations (nines, HAProxy
# and nginx with the same thread count, keep-alive upstreams, round robin
# over three backends, health checks and retries). write_configs needs WORK
# and BACKEND_PORTS (three ports) set by the caller.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { # wait_port PORT: until something accepts on it (5 s)
  for _ in $(seq 1 250); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.02
  done
  echo "port $1 never opened" >&2; return 1
}

# write_backend_conf DIR PORT: DIR/nginx.conf for a single-process nginx
# backend on PORT answering 200 "ok".
write_backend_conf() {
  local dir=$1 port=$2
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $dir/nginx.pid; error_log $dir/error.log crit;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir; uwsgi_temp_path $dir; scgi_temp_path $dir;
  server { listen 127.0.0.1:$port; location / { return 200 "ok\n"; } } }
CONF
}

# write_configs THREADS PORT: writes nines.toml, haproxy.cfg and nginx.conf
# listening on PORT into $WORK/proxyTHREADS.
write_configs() {
  local n=$1 port=$2 dir="$WORK/proxy$1"
  mkdir -p "$dir"
  {
    echo "[gateway]"; echo "worker_threads = $n"; echo
    echo "[[listener]]"; echo 'name = "web"'; echo "bind = \"127.0.0.1:$port\""; echo 'protocol = "http"'; echo 'cluster = "web"'; echo
    echo "[[cluster]]"; echo 'name = "web"'; echo 'balance = "round_robin"'
    echo "backends = [{ addr = \"127.0.0.1:${BACKEND_PORTS[0]}\" }, { addr = \"127.0.0.1:${BACKEND_PORTS[1]}\" }, { addr = \"127.0.0.1:${BACKEND_PORTS[2]}\" }]"
    echo 'connect_timeout = "500ms"'; echo 'response_timeout = "5s"'
    echo "[cluster.health]"; echo 'kind = "http"'; echo 'path = "/"'; echo 'interval = "500ms"'; echo 'timeout = "300ms"'; echo 'rise = 2'; echo 'fall = 2'
    echo "[cluster.passive]"; echo 'consecutive_failures = 1'; echo 'ejection_time = "5s"'
    echo "[cluster.retry]"; echo 'attempts = 3'; echo 'on = ["connect-failure", "reset", "timeout"]'
  } >"$dir/nines.toml"
  cat >"$dir/haproxy.cfg" <<EOF
global
  nbthread $n
  maxconn 8000
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 500ms
  timeout client 30s
  timeout server 5s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
frontend web
  bind 127.0.0.1:$port
  default_backend web
backend web
  balance roundrobin
  default-server check inter 500ms fall 2 rise 2
  server b0 127.0.0.1:${BACKEND_PORTS[0]}
  server b1 127.0.0.1:${BACKEND_PORTS[1]}
  server b2 127.0.0.1:${BACKEND_PORTS[2]}
EOF
  cat >"$dir/nginx.conf" <<EOF
daemon off; worker_processes $n; pid $dir/nginx.pid; error_log $dir/error.log crit;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir; uwsgi_temp_path $dir; scgi_temp_path $dir;
  upstream web {
    server 127.0.0.1:${BACKEND_PORTS[0]} max_fails=1 fail_timeout=5s;
    server 127.0.0.1:${BACKEND_PORTS[1]} max_fails=1 fail_timeout=5s;
    server 127.0.0.1:${BACKEND_PORTS[2]} max_fails=1 fail_timeout=5s;
    keepalive 256;
  }
  server { listen 127.0.0.1:$port;
    location / { proxy_pass http://web; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_connect_timeout 500ms; proxy_read_timeout 5s;
      proxy_next_upstream error timeout http_502 http_503 non_idempotent; proxy_next_upstream_tries 3; } } }
EOF
}
